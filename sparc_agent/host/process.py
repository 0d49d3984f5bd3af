"""Every process sparc-agent starts goes through here: `run()` for a short command that is waited
for, `spawn()` for one read as it runs (asyncio), `replace_with()` for handing the terminal over.

`run()` never raises for the command's sake: a missing binary, an unrunnable one or a timeout come
back as a `Done` with an exit code a shell would give (127, 126, 124) and the reason in `stderr`, so
every caller handles one shape of failure. Output is text (undecodable bytes replaced).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Done", "Process", "kill_group", "replace_with", "run", "spawn"]

Process = asyncio.subprocess.Process
NOT_FOUND = 127
NOT_RUNNABLE = 126
TIMED_OUT = 124


@dataclass(frozen=True)
class Done:
    """A finished command: its exit code, stdout and stderr."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    timeout: float = 20,
    env: Mapping[str, str] | None = None,
) -> Done:
    """Run argv (never a shell) to completion, at most `timeout` seconds; stdin is `input` or empty."""
    argv = list(argv)
    try:
        done = subprocess.run(
            argv,
            input=input if input is not None else b"",
            capture_output=True,
            timeout=timeout,
            check=False,
            env=dict(env) if env is not None else None,
        )
    except FileNotFoundError:
        return Done(NOT_FOUND, "", f"{argv[0]}: not found")
    except subprocess.TimeoutExpired:
        return Done(TIMED_OUT, "", f"{argv[0]}: timed out after {timeout:g} s")
    except OSError as exc:
        return Done(NOT_RUNNABLE, "", f"{argv[0]}: {exc.strerror or exc}")
    return Done(done.returncode, _text(done.stdout), _text(done.stderr))


def _text(data: bytes) -> str:
    return data.decode(errors="replace")


_STREAMS = {
    "pipe": asyncio.subprocess.PIPE,
    "null": asyncio.subprocess.DEVNULL,
    "stdout": asyncio.subprocess.STDOUT,
}


async def spawn(
    argv: Sequence[str],
    *,
    stdin: Literal["pipe", "null"] = "null",
    stdout: Literal["pipe", "null"] = "pipe",
    stderr: Literal["pipe", "null", "stdout"] = "pipe",
    new_session: bool = False,
) -> Process:
    """Start argv (never a shell), stdin from /dev/null unless "pipe"; the caller reads and waits for it.

    `stderr="stdout"` merges the two streams; `new_session` gives it its own process group, so that
    `kill_group` also reaches what it forked. Raises OSError when argv[0] cannot be run.
    """
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=_STREAMS[stdin],
        stdout=_STREAMS[stdout],
        stderr=_STREAMS[stderr],
        start_new_session=new_session,
    )


def kill_group(proc: Process) -> None:
    """SIGKILL a process started with `new_session=True` and everything in its group.

    killpg alone reaches the leader too. A proc.kill() after it would poll (waitpid) the dead leader
    first and reap it behind asyncio's child watcher, which then reports exit status 255, not -9."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # not a group leader (no new session): the process alone
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def replace_with(argv: Sequence[str]) -> None:
    """Replace this process with argv[0] (an absolute path), e.g. `logs` handing over to journalctl."""
    os.execv(argv[0], list(argv))
