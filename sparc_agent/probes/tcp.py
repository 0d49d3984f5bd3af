"""TCP: healthy when a connection succeeds."""

from __future__ import annotations

from sparc_agent.probes.base import PortSpec, ProbeResult, Target, close, measured, open_tcp


class TcpSpec(PortSpec):
    """Healthy when a connection is accepted."""


async def probe(spec: TcpSpec, target: Target) -> ProbeResult:
    async def check() -> str:
        _, writer = await open_tcp(target.host, spec.port)
        await close(writer)
        return "connected"

    return await measured(check(), spec.timeout_s)
