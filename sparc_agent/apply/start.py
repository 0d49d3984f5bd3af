"""Step 4, start: bring every service up in dependency order, as soon as what it depends on is
started (or healthy), starting what is down and restarting what changed; then verify each.

Independent services start at once: each waits only for its own dependencies' futures.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TextIO

from sparc_agent.apply import gpu_budget, portclash, timeline
from sparc_agent.apply.verify import Where, wait_healthy, with_tail
from sparc_agent.errors import SparcError
from sparc_agent.host.systemd import UserManager
from sparc_agent.probes.inpod import PodProbers
from sparc_agent.profile.model import Profile
from sparc_agent.profile.rules import port_publishers, probe_pod, start_order
from sparc_agent.render import Names


@dataclass
class ServiceOutcome:
    name: str
    action: str  # started, restarted, unchanged, skipped
    healthy: bool | None = None  # None: no probe
    seconds: float = 0.0
    detail: str = ""


@dataclass
class StartStep:
    mgr: UserManager
    profile: Profile
    restart: set[str]  # services whose files or secrets changed
    log: TextIO
    outcomes: dict[str, ServiceOutcome] = field(default_factory=dict)
    acted: set[str] = field(default_factory=set)  # started or restarted by this apply

    def __post_init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.names = Names(self.profile.name)
        self.started = {n: loop.create_future() for n in self.profile.services}
        self.healthy = {n: loop.create_future() for n in self.profile.services}

    async def run(self) -> dict[str, ServiceOutcome]:
        async with PodProbers() as self.probers:
            await asyncio.gather(*(self.bring_up(n) for n in start_order(self.profile)))
        return self.outcomes

    def _done(self, outcome: ServiceOutcome, started: bool, healthy: bool) -> None:
        self.outcomes[outcome.name] = outcome
        self.started[outcome.name].set_result(started)
        self.healthy[outcome.name].set_result(healthy)

    async def _dependency_failed(self, name: str) -> str | None:
        for dep, condition in self.profile.services[name].depends_on.items():
            if not await (self.healthy[dep] if condition == "healthy" else self.started[dep]):
                return dep
        return None

    async def _action(self, name: str, unit: str) -> str:
        state = await self.mgr.unit_state(unit)
        deps = self.profile.services[name].depends_on
        dep_restarted = any(d in self.acted and c == "healthy" for d, c in deps.items())
        if not state.is_active:
            if state.is_failed:
                await self.mgr.reset_failed(unit)
            return "started"
        return "restarted" if name in self.restart or dep_restarted else "unchanged"

    async def _carry_out(self, unit: str, action: str, oneshot: bool) -> None:
        """A one-shot's start ends when it exited (0, else JobFailed): `started` is `completed` for it."""
        if action == "started":
            await self.mgr.start(unit)
        elif action == "restarted" and oneshot:
            # run it again: Requires= stops its `completed` dependents first (they start after it)
            await self.mgr.stop(unit)
            await self.mgr.start(unit)
        elif action == "restarted":
            await self.mgr.restart(unit)

    async def _why_start_failed(self, exc: SparcError, unit: str) -> str:
        """A failed dependency is followed to the pod (whose unit may be inactive rather than failed)."""
        pod = portclash.blamed_on_the_pod(exc, self.names.pod_unit, port_publishers(self.profile))
        return pod or with_tail(f"{exc}", unit)

    async def bring_up(self, name: str) -> None:
        failed_dep = await self._dependency_failed(name)
        if failed_dep is not None:
            self._done(ServiceOutcome(name, "skipped", False, detail=f"{failed_dep} failed"), False, False)
            return
        unit = self.names.service_unit(name)
        action = await self._action(name, unit)
        t0 = time.monotonic()
        oneshot = self.profile.services[name].oneshot
        try:
            await self._carry_out(unit, action, oneshot)
        except SparcError as exc:
            detail = await self._why_start_failed(exc, unit)
            self._done(ServiceOutcome(name, action, False, detail=detail), False, False)
            return
        if action != "unchanged":
            self.acted.add(name)
            timeline.mark(f"{name}: {action} (its start job done)")
            print(f"{action} {unit}" + (" (ran to completion)" if oneshot else ""), file=self.log, flush=True)
        outcome = ServiceOutcome(name, action)
        self.outcomes[name] = outcome
        self.started[name].set_result(True)
        health = self.profile.services[name].health
        if health is None:
            ok, outcome.detail = gpu_budget.check(self.profile, name, unit, self.log)
            outcome.healthy = None if ok else False
            self.healthy[name].set_result(ok)
            return
        where = Where(unit, self.names.container(name), probe_pod(self.profile, name), self.probers)
        ok, detail = await wait_healthy(self.mgr, where, health, name in self.acted)
        if ok:  # a GPU service must also be within its GPU memory budget
            ok, detail = gpu_budget.check(self.profile, name, unit, self.log)
        outcome.healthy, outcome.seconds, outcome.detail = ok, time.monotonic() - t0, detail
        if ok and action != "unchanged":
            timeline.mark(f"{name}: healthy")
            print(f"{name} healthy after {outcome.seconds:.1f} s", file=self.log, flush=True)
        self.healthy[name].set_result(ok)
