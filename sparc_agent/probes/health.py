"""From a service's `health:` to probe runs: the mapping, one probe now, the start budget."""

from __future__ import annotations

from typing import Any

from sparc_agent.probes import ProbeResult
from sparc_agent.probes.inpod import PodProbers
from sparc_agent.profile.model import Health

# how often apply re-probes a starting service: fast, since someone is waiting at a prompt;
# the supervisor uses the profile's interval instead
APPLY_POLL_S = 0.05


def probe_spec(health: Health) -> Any:
    return health.spec


async def probe_once(health: Health, container: str, probers: PodProbers, pod: str | None) -> ProbeResult:
    """Probe once, on the host or (`pod` given) inside that pod's network namespace."""
    return await probers.run(probe_spec(health), container=container, pod=pod)


def start_budget(health: Health) -> float:
    """What the profile allows a starting service: start_period, then `retries` failed probes."""
    return health.start_period + health.retries * (health.interval + health.timeout)
