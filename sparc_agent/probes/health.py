"""From a service's `health:` to probe runs: the mapping, one probe now, the start budget."""

from __future__ import annotations

from typing import Any

from sparc_agent.probes import ProbeResult
from sparc_agent.probes.inpod import PodProbers
from sparc_agent.profile.model import Health

# how soon apply re-probes a starting service: someone waits at a prompt, so the first look again
# comes quickly and later ones at most a quarter of the time waited so far after it is ready (a stand-in
# up in 80 ms is seen by ~100 ms; a model server loading for minutes is not probed 20 times a second).
# The supervisor uses the profile's interval instead.
APPLY_FIRST_POLL_S = 0.01
APPLY_POLL_LATE = 0.25


def probe_spec(health: Health) -> Any:
    return health.spec


async def probe_once(health: Health, container: str, probers: PodProbers, pod: str | None) -> ProbeResult:
    """Probe once, on the host or (`pod` given) inside that pod's network namespace."""
    return await probers.run(probe_spec(health), container=container, pod=pod)


def apply_poll_gap(health: Health, waited: float) -> float:
    """The pause before apply's next probe of a starting service that has waited `waited` seconds."""
    return min(health.interval, max(APPLY_FIRST_POLL_S, APPLY_POLL_LATE * waited))


def start_budget(health: Health) -> float:
    """What the profile allows a starting service: start_period, then `retries` failed probes."""
    return health.start_period + health.retries * (health.interval + health.timeout)
