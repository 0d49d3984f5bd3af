"""exec: `podman exec CONTAINER COMMAND...` exits 0. argv only, never a shell."""

from __future__ import annotations

import asyncio
import contextlib
import shutil

from .base import ProbeOutcome, ProbeResult, TargetFailed, measured
from .spec import ExecSpec


async def probe(spec: ExecSpec, container: str | None) -> ProbeResult:
    podman = shutil.which("podman")
    if podman is None or container is None:
        return ProbeResult(
            ProbeOutcome.ERROR, 0.0, "podman not found" if container else "no container to exec in"
        )

    async def check() -> str:
        proc = await asyncio.create_subprocess_exec(
            podman,
            "exec",
            container,
            *spec.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await proc.communicate()
        finally:
            if proc.returncode is None:  # timed out: do not leave the exec behind
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            last = out.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise TargetFailed(f"exit {proc.returncode}: {last[0][:120]}")
        return "exit 0"

    return await measured(check(), spec.timeout_s)
