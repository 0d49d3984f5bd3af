"""From a service's `health:` to probe runs: the mapping, one probe now, and waiting for healthy."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from .model import ExecProbe, GrpcProbe, Health, HttpProbe, StunProbe, TcpProbe, WebSocketProbe
from .probes import ProbeOutcome, ProbeResult, run_probe
from .probes import spec as ps

# how often apply re-probes a starting service: fast, since someone is waiting at a prompt;
# the supervisor uses the profile's interval instead
APPLY_POLL_S = 0.05


def probe_spec(health: Health) -> ps.ProbeSpec:
    probe = health.probe
    timeout = health.timeout
    if isinstance(probe, TcpProbe):
        return ps.TcpSpec(port=probe.port, timeout_s=timeout)
    if isinstance(probe, HttpProbe):
        return ps.HttpSpec(port=probe.port, path=probe.path, status=probe.status, timeout_s=timeout)
    if isinstance(probe, WebSocketProbe):
        return ps.WebSocketSpec(port=probe.port, path=probe.path, timeout_s=timeout)
    if isinstance(probe, GrpcProbe):
        return ps.GrpcSpec(port=probe.port, service=probe.service, timeout_s=timeout)
    if isinstance(probe, StunProbe):
        return ps.StunSpec(port=probe.port, timeout_s=timeout)
    assert isinstance(probe, ExecProbe)
    return ps.ExecSpec(command=probe.command, timeout_s=timeout)


async def probe_once(health: Health, container: str) -> ProbeResult:
    return await run_probe(probe_spec(health), container=container)


@dataclass(frozen=True)
class WaitOutcome:
    healthy: bool
    seconds: float
    last: ProbeResult | None


async def wait_healthy(health: Health, container: str, budget_s: float | None = None) -> WaitOutcome:
    """Probe until the service answers, or until its start period plus `retries` intervals pass.

    The budget is what the profile allows a starting service: start_period, then `retries`
    failed probes `interval` apart (each may take `timeout`).
    """
    budget = budget_s if budget_s is not None else start_budget(health)
    start = time.monotonic()
    last: ProbeResult | None = None
    while True:
        last = await probe_once(health, container)
        elapsed = time.monotonic() - start
        if last.outcome is ProbeOutcome.OK:
            return WaitOutcome(True, elapsed, last)
        if elapsed >= budget:
            return WaitOutcome(False, elapsed, last)
        await asyncio.sleep(APPLY_POLL_S)


def start_budget(health: Health) -> float:
    return health.start_period + health.retries * (health.interval + health.timeout)
