"""exec: `podman exec CONTAINER COMMAND...` exits 0. An argv list, never a shell.

podman missing, or no container to run in, is ERROR (our side), not FAILED (the service's). The
command's output is read as it comes and only its tail kept, so a chatty check cannot grow the
agent. On timeout the podman client's process group is killed, so no client piles up; the command
inside the container belongs to conmon and runs on until it ends (podman 4 has no way to cancel an
exec session, and signals to the client are not forwarded), so a check should bound itself.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass

from sparc_agent.host.process import kill_group, spawn
from sparc_agent.probes.base import (
    ProbeError,
    ProbeOutcome,
    ProbeResult,
    Target,
    TargetFailed,
    Timed,
    measured,
)
from sparc_agent.probes.fields import Argv

KEEP = 4096  # bytes of output tail kept for the detail
DETAIL = 160  # characters of its last line shown


async def _tail(stream: asyncio.StreamReader) -> bytes:
    tail = b""
    while chunk := await stream.read(65536):
        tail = (tail + chunk)[-KEEP:]
    return tail


def last_line(output: bytes) -> str:
    lines = output.decode(errors="replace").strip().splitlines()
    if not lines:
        return ""
    line = lines[-1].strip()
    return line if len(line) <= DETAIL else line[: DETAIL - 1] + "…"


@dataclass(frozen=True)
class ExecSpec(Timed):
    command: Argv


async def probe(spec: ExecSpec, target: Target) -> ProbeResult:
    container = target.container
    if container is None:
        return ProbeResult(ProbeOutcome.ERROR, 0.0, "no container to exec in")
    if not spec.command:
        return ProbeResult(ProbeOutcome.ERROR, 0.0, "empty exec command")

    async def check() -> str:
        podman = shutil.which("podman")  # looked up per run: podman may be installed after the agent started
        if podman is None:
            raise ProbeError("podman not found on PATH")
        try:
            # its own session: a kill reaches podman and any helper it forked
            proc = await spawn([podman, "exec", container, *spec.command], stderr="stdout", new_session=True)
        except OSError as exc:  # found but not runnable: a broken install on our side
            raise ProbeError(f"cannot run {podman}: {exc.strerror or exc}") from None
        try:
            assert proc.stdout is not None
            output = await _tail(proc.stdout)
            code = await proc.wait()
        finally:
            if proc.returncode is None:  # timed out (or cancelled): do not leave the client behind
                kill_group(proc)
                await asyncio.shield(proc.wait())
        if code != 0:
            how = f"killed by signal {-code}" if code < 0 else f"exit {code}"
            line = last_line(output)
            raise TargetFailed(f"{how}: {line}" if line else how)
        return "exit 0"

    return await measured(check(), spec.timeout_s)
