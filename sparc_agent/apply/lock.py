"""One apply per stack at a time: an flock on STATE_DIR/STACK/apply.lock that holds the owner's pid
(the agent reads it from /proc/locks to stay out of the way, never taking it)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from sparc_agent.errors import EnvironmentProblem
from sparc_agent.state.generations import ensure_private_dir
from sparc_agent.state.paths import PRIVATE_FILE_MODE


class Busy(EnvironmentProblem):
    """Another apply of the same stack holds the lock (and --no-wait was given)."""


@contextlib.contextmanager
def apply_lock(path: Path, wait: bool, log: TextIO) -> Iterator[None]:
    """One apply per stack at a time. A waiting apply says whom it waits for."""
    ensure_private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            if not wait:
                raise Busy(f"another sparc-agent apply (pid {holder}) is applying this stack") from None
            print(f"waiting for another sparc-agent apply (pid {holder}) to finish...", file=log, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
