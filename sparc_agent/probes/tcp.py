"""TCP: healthy when a connection succeeds."""

from __future__ import annotations

from sparc_agent.probes.base import ProbeResult, close, measured, open_tcp
from sparc_agent.probes.spec import TcpSpec


async def probe(spec: TcpSpec, host: str) -> ProbeResult:
    async def check() -> str:
        _, writer = await open_tcp(host, spec.port)
        await close(writer)
        return "connected"

    return await measured(check(), spec.timeout_s)
