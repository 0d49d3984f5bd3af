"""Health probes, run from the host: one module per kind, all asyncio, each under its timeout.

Probes only report; they never restart anything (the supervisor decides).
"""

from __future__ import annotations

from . import exec as exec_probe
from . import http, stun, tcp, websocket
from .base import ProbeOutcome, ProbeResult
from .spec import ExecSpec, GrpcSpec, HttpSpec, ProbeSpec, StunSpec, TcpSpec, WebSocketSpec


async def run_probe(spec: ProbeSpec, *, host: str = "127.0.0.1", container: str | None = None) -> ProbeResult:
    if isinstance(spec, TcpSpec):
        return await tcp.probe(spec, host)
    if isinstance(spec, HttpSpec):
        return await http.probe(spec, host)
    if isinstance(spec, WebSocketSpec):
        return await websocket.probe(spec, host)
    if isinstance(spec, GrpcSpec):
        from . import grpc  # h2 only when a gRPC probe exists

        return await grpc.probe(spec, host)
    if isinstance(spec, StunSpec):
        return await stun.probe(spec, host)
    return await exec_probe.probe(spec, container)


__all__ = [
    "ExecSpec",
    "GrpcSpec",
    "HttpSpec",
    "ProbeOutcome",
    "ProbeResult",
    "ProbeSpec",
    "StunSpec",
    "TcpSpec",
    "WebSocketSpec",
    "run_probe",
]
