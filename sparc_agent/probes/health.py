"""From a service's `health:` to probe runs: the mapping, one probe now, the start budget."""

from __future__ import annotations

from sparc_agent.probes import ProbeResult, run_probe
from sparc_agent.probes import spec as ps
from sparc_agent.profile.model import (
    ExecProbe,
    GrpcProbe,
    Health,
    HttpProbe,
    StunProbe,
    TcpProbe,
    WebSocketProbe,
)

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


def start_budget(health: Health) -> float:
    """What the profile allows a starting service: start_period, then `retries` failed probes."""
    return health.start_period + health.retries * (health.interval + health.timeout)
