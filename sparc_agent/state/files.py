"""Atomic file writes: a reader sees the old bytes or the new ones, never a mix."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Temp file in the same directory, fsync, rename over, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def crash_point(name: str) -> None:
    """Tests set SPARC_AGENT_CRASH_AT to kill -9 the process here (tests/test_apply_e2e.py)."""
    if os.environ.get("SPARC_AGENT_CRASH_AT") == name:
        os.kill(os.getpid(), 9)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_or_create(path: Path, make: Callable[[], bytes], mode: int) -> bytes:
    """The file's bytes; created first (with `mode` from its first byte, via write_atomic's mkstemp)
    when it does not exist. Callers serialise creators (the apply lock)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        data = make()
        write_atomic(path, data, mode=mode)
        return data
