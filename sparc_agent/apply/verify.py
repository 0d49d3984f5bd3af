"""Step 5, verify: wait until a service answers its probe, or say why it will not (with its log tail)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sparc_agent.host.journal import journal_tail
from sparc_agent.host.systemd import UserManager
from sparc_agent.probes import ProbeOutcome
from sparc_agent.probes.health import apply_poll_gap, probe_once, start_budget
from sparc_agent.probes.inpod import PodProbers
from sparc_agent.profile.model import Health

UNIT_LOOK_S = 0.25  # how often a service that fails its probes is checked for having stopped


def with_tail(message: str, unit: str) -> str:
    tail = journal_tail(unit)
    return message + (f"; last log lines:\n{tail}" if tail else "")


@dataclass(frozen=True)
class Where:
    """How to reach a service's probe: its unit, its container, the pod it is probed inside (if any)."""

    unit: str
    container: str
    pod: str | None
    probers: PodProbers


async def wait_healthy(mgr: UserManager, where: Where, health: Health, starting: bool) -> tuple[bool, str]:
    """(healthy, why not). A service this apply started gets its whole start budget; one it did not
    touch gets one look plus its retries."""
    budget = start_budget(health) if starting else health.retries * (health.interval + health.timeout)
    t0 = next_look = time.monotonic()
    while True:
        result = await probe_once(health, where.container, where.probers, where.pod)
        if result.outcome is ProbeOutcome.OK:
            return True, ""
        unit, now = where.unit, time.monotonic()
        if now >= next_look or now - t0 >= budget:  # not at every quick probe: 3 D-Bus calls, ~250 properties
            next_look = now + UNIT_LOOK_S
            state = await mgr.unit_state(unit)
            if state.active_state == "failed" or (
                state.active_state == "inactive" and state.sub_state == "dead"
            ):
                return False, with_tail(f"{unit} is {state.active_state} ({state.result})", unit)
        if now - t0 >= budget:
            what = "error" if result.outcome is ProbeOutcome.ERROR else "failing"
            return False, with_tail(
                f"{health.kind} probe still {what} after {budget:.0f} s: {result.detail}", unit
            )
        await asyncio.sleep(apply_poll_gap(health, time.monotonic() - t0))
