"""A running container's own processes, found under its unit's main process and held by pidfd.

Under quadlet the unit's main process is conmon (`--sdnotify=conmon`, the default); the container's
processes are its descendants: the container's init (catatonit) and the application under it. To stop
a hung container at once the agent SIGKILLs exactly these, never podman's `ExecStop=` command nor
conmon: conmon reports the exit, podman's stop finds the container gone, and the unit's stop completes.
(A container frozen with `podman pause` on the cgroup v1 freezer dies when podman's stop thaws it.)
When the main process is not conmon (`--sdnotify=container`), it is the container's init and is taken
too. A pidfd opened before the stop keeps a later kill from reaching a PID the kernel reused meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from types import TracebackType
from typing import Self

CONMON = "conmon"


def children(pid: int) -> list[int]:
    """The child processes of `pid` (of all its threads); [] when it is gone or not readable."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, parents before their children."""
    out: list[int] = []
    todo = children(pid)
    while todo:
        child = todo.pop(0)
        if child not in out:
            out.append(child)
            todo += children(child)
    return out


def command_name(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return ""


class Payload:
    """The container's processes of a unit whose main process is `main_pid`, each held by a pidfd.
    Use as a context manager (the pidfds are closed at the end)."""

    def __init__(self, main_pid: int) -> None:
        pids: list[int] = []
        if main_pid > 0:
            pids = descendants(main_pid)
            if command_name(main_pid) != CONMON:
                pids.insert(0, main_pid)
        self._fds: list[int] = []
        self.denied = 0  # processes not ours to signal (another user's): the caller must stop them otherwise
        for pid in pids:
            with contextlib.suppress(OSError):  # gone meanwhile: nothing to kill
                self._fds.append(os.pidfd_open(pid))

    def __len__(self) -> int:
        return len(self._fds)

    def kill(self) -> int:
        """SIGKILL every process still alive; how many were signalled (`denied` counts the refusals)."""
        killed = 0
        for fd in self._fds:
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
            except PermissionError:
                self.denied += 1
        return killed

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
