"""Health probes, run from the host: one module per kind, all asyncio, each under its timeout.

Owns: the table of kinds (kinds.py) and a module per kind holding its spec and its probe function.
Probes only report; they never restart anything (the supervisor decides) and never import pydantic
(the agent must stay small; the profile validates their specs). Every call returns a ProbeResult:
OK, FAILED (the target's fault) or ERROR (ours: a bad spec, podman missing, a bug), never an
exception, so one broken probe cannot take the supervision loop down with it.

Never imports: apply, agent, state, export, cli.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sparc_agent.probes.base import ProbeOutcome, ProbeResult, Target
from sparc_agent.probes.exec import ExecSpec
from sparc_agent.probes.grpc import GrpcSpec
from sparc_agent.probes.http import HttpSpec
from sparc_agent.probes.kinds import KINDS, kind_of
from sparc_agent.probes.stun import StunSpec
from sparc_agent.probes.tcp import TcpSpec
from sparc_agent.probes.websocket import WebSocketSpec


def spec_problem(spec: object) -> str | None:
    """What makes a spec unprobeable, if anything; the profile validates too, this guards other callers."""
    timeout = getattr(spec, "timeout_s", None)
    if not isinstance(timeout, int | float) or not timeout > 0:
        return f"timeout_s must be > 0, not {timeout!r}"
    port = getattr(spec, "port", 1)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return f"port must be 1..65535, not {port!r}"
    if isinstance(spec, HttpSpec):
        lo, hi = spec.status
        if not 100 <= lo <= hi <= 599:
            return f"status range must be within 100..599 and lo <= hi, not {lo}..{hi}"
    return None


async def run_probe(
    spec: Any,
    *,
    host: str = "127.0.0.1",
    container: str | None = None,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
) -> ProbeResult:
    """Probe once. Never raises (but for cancellation): failures and our own errors are results."""
    kind = kind_of(spec)
    if kind is None:
        return ProbeResult(ProbeOutcome.ERROR, 0.0, f"unknown probe spec {type(spec).__name__}")
    problem = spec_problem(spec)
    if problem is not None:
        return ProbeResult(ProbeOutcome.ERROR, 0.0, f"bad {type(spec).__name__}: {problem}")
    start = time.monotonic()
    try:
        return await kind.probe(spec, Target(host, container, secrets or {}))
    except Exception as exc:  # outside the probe's own net (an import, a bug in a probe's setup)
        return ProbeResult(ProbeOutcome.ERROR, time.monotonic() - start, f"{type(exc).__name__}: {exc}")


__all__ = [
    "KINDS",
    "ExecSpec",
    "GrpcSpec",
    "HttpSpec",
    "ProbeOutcome",
    "ProbeResult",
    "StunSpec",
    "TcpSpec",
    "WebSocketSpec",
    "run_probe",
]
