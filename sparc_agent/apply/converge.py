"""Files -> a running, healthy stack: plan, write, reload, start and verify, in that order.

The only writer of unit files. It touches only files whose bytes change and only files carrying
our header; it restarts only services whose files (or secrets) changed, plus their `healthy`
dependents. Rollback (apply.rollback) is this same function run with an older generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TextIO

from sparc_agent.apply import timeline
from sparc_agent.apply.plan import file_changes
from sparc_agent.apply.runs import load, pod_stale, stale_services
from sparc_agent.apply.start import ServiceOutcome, StartStep
from sparc_agent.apply.write import stop_removed, write
from sparc_agent.host.systemd import UserManager
from sparc_agent.profile.model import Profile
from sparc_agent.profile.rules import start_order
from sparc_agent.render import Names
from sparc_agent.state.generations import Generation
from sparc_agent.state.live import Live


@dataclass
class ConvergeResult:
    files_written: int = 0
    files_removed: int = 0
    reloaded: bool = False
    services: dict[str, ServiceOutcome] = field(default_factory=dict)
    failed: str | None = None  # the first service that did not become healthy
    reason: str = ""

    def count(self, action: str) -> int:
        return sum(1 for s in self.services.values() if s.action == action)


async def converge(
    mgr: UserManager,
    live: Live,
    profile: Profile,
    generation: Generation,
    log: TextIO,
) -> ConvergeResult:
    names = Names(profile.name)
    files = generation.files
    changes = file_changes(live, files)
    result = ConvergeResult(files_written=len(changes.writes), files_removed=len(changes.removes))
    await stop_removed(mgr, changes, log)
    switched = write(live, generation, changes)
    if switched:
        timeline.mark(f"{len(changes.writes)} files written, {len(changes.removes)} removed")
    result.reloaded, inputs = await load(mgr, live.state, profile, files, changes, switched)
    if result.reloaded:
        timeline.mark("reloaded")
    if await pod_stale(mgr, profile, inputs):
        # new ports need a new pod; its containers are BindsTo= it and stop with it, then start below
        print(f"recreating {names.pod_unit} (the pod changed)", file=log, flush=True)
        await mgr.stop(names.pod_unit)
    restart = await stale_services(mgr, profile, inputs)
    result.services = await StartStep(mgr, profile, restart, log).run()
    for name in start_order(profile):
        outcome = result.services[name]
        if outcome.healthy is False and result.failed is None:
            result.failed, result.reason = name, outcome.detail
    if result.failed is None:
        await mgr.start(names.target)  # everything it wants is up: this only marks the target active
        timeline.mark(f"{names.target} active")
    return result
