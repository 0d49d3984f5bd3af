"""`sparc-agent apply`: validate, render, record a generation, converge to it, roll back on failure.

lock -> recover an interrupted commit -> pull -> secrets -> record -> converge -> status | rollback
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import TextIO, TypeVar

from sparc_agent.agent.supervisor import plan_from_profile
from sparc_agent.apply import timeline
from sparc_agent.apply.claims import refuse_foreign_units
from sparc_agent.apply.converge import ConvergeResult, converge
from sparc_agent.apply.fastpath import render_key
from sparc_agent.apply.lock import apply_lock
from sparc_agent.apply.plan import file_changes, unified_diff
from sparc_agent.apply.rollback import rollback, withdraw
from sparc_agent.apply.secrets import SecretUpdates, absent_secrets, put_secrets, secret_updates
from sparc_agent.errors import SparcError
from sparc_agent.host import podman
from sparc_agent.host.detect import HostVersions, detect
from sparc_agent.host.systemd import UserManager
from sparc_agent.profile.load import LoadedProfile
from sparc_agent.profile.model import Profile
from sparc_agent.profile.rules import port_publishers
from sparc_agent.render import Target, render
from sparc_agent.state import commit
from sparc_agent.state.generations import Generation, Store
from sparc_agent.state.live import Live
from sparc_agent.state.meta import GenerationMeta, SecretSource, Status, SupervisionPlan, TargetVersions
from sparc_agent.state.paths import Paths

T = TypeVar("T")


class ApplyFailed(SparcError):
    """Applied, but a service did not become healthy; the previous generation was put back."""

    exit_code = 1


@dataclass(frozen=True)
class ApplyOptions:
    dry_run: bool = False
    wait_for_lock: bool = True
    target: Target | None = None  # default: what this host runs
    input_key: str | None = None  # fastpath.input_key() of the command line, recorded for the fast path
    detected: Future[HostVersions] | None = None  # detect(), started early (while the profile validated)


@dataclass
class ApplyReport:
    stack: str
    generation: int | None
    diff: str
    result: ConvergeResult | None = None
    rolled_back_to: int | None = None
    withdrawn: bool = False  # a first generation that failed: stopped, its files removed, none current
    pulled: list[str] = field(default_factory=list)
    seconds: float = 0.0


def supervision_plan(profile: Profile) -> SupervisionPlan:
    """What supervises a generation without the model: the agent's service plans (units, containers,
    probes, timing, policy) and where secrets come from (fastpath.try_noop checks them)."""
    sources = {
        n: SecretSource(file=d.file, env=None if d.file else d.env) for n, d in profile.secrets.items()
    }
    return SupervisionPlan(plan_from_profile(profile, 0).services, sources, port_publishers(profile))


def draft_meta(
    loaded: LoadedProfile, target: Target, secrets: SecretUpdates, input_key: str | None
) -> GenerationMeta:
    """The record of a generation about to be written (Store.record fills number, time, hashes)."""
    return GenerationMeta(
        number=0,
        created="",
        status=Status.APPLYING,
        files={},
        plan=supervision_plan(loaded.profile),
        secrets=secrets.fingerprints,
        target=TargetVersions(str(target.podman), str(target.quadlet), target.systemd),
        digest=loaded.digest,
        sources=tuple(loaded.files),
        input_key=input_key,
        render_key=render_key(),
    )


def record(store: Store, loaded: LoadedProfile, files: dict[str, str], draft: GenerationMeta) -> Generation:
    """A new generation, or the current one when it has these files, secrets and profile (then
    with this command line's keys, so that the fast path answers the next identical apply)."""
    current = store.current()
    if current is not None and (current.meta.files, current.meta.secrets, current.meta.digest) == (
        Store.hashes(files),
        draft.secrets,
        draft.digest,
    ):
        return store.rewrite(
            current, replace(current.meta, input_key=draft.input_key, render_key=draft.render_key)
        )
    return store.record(loaded.document, files, draft)


def apply(
    loaded: LoadedProfile, options: ApplyOptions = ApplyOptions(), log: TextIO = sys.stderr
) -> ApplyReport:
    return asyncio.run(apply_async(loaded, options, log))


@dataclass
class HostNow:
    """What apply asks the host before it renders, all at once: versions, the bus, images, secrets."""

    target: Target
    mgr: UserManager
    missing_images: list[str]
    absent_secrets: set[str]


async def ask_host(profile: Profile, options: ApplyOptions) -> HostNow:
    """Independent questions, each a process or a socket: asked together, not one after another."""

    async def versions() -> Target:
        if options.target is not None:
            return options.target
        if options.detected is not None:
            return (await asyncio.wrap_future(options.detected)).target()
        return (await asyncio.to_thread(detect)).target()

    async def marked(what: str, question: Awaitable[T]) -> T:
        answer = await question
        timeline.mark(f"{what} known")
        return answer

    images = [s.image for s in profile.services.values()]
    answers = await asyncio.gather(
        marked("host versions", versions()),
        marked("bus", UserManager.connect()),
        marked("images", asyncio.to_thread(podman.missing_images, images)),
        marked("secrets", asyncio.to_thread(absent_secrets, profile)),
        return_exceptions=True,
    )
    failed = next((a for a in answers if isinstance(a, BaseException)), None)
    if failed is not None:
        if isinstance(answers[1], UserManager):
            await answers[1].close()
        raise failed
    timeline.mark("host versions, bus, images and secrets known")
    return HostNow(*answers)  # type: ignore[arg-type]  # no exception among them (checked above)


async def apply_async(loaded: LoadedProfile, options: ApplyOptions, log: TextIO) -> ApplyReport:
    t0 = time.monotonic()
    profile = loaded.profile
    paths = Paths.from_env()
    store = Store(paths.stack(profile.name))
    podman.podman_path()  # exit 3 now, not halfway, when podman is missing
    if options.dry_run:
        versions = options.detected.result() if options.detected else detect()
        files = render(profile, options.target or versions.target())
        changes = file_changes(Live(paths.config_home, store.paths), files)
        return ApplyReport(profile.name, None, unified_diff(changes))
    with apply_lock(store.paths.lock, options.wait_for_lock, log):
        host = await ask_host(profile, options)  # under the lock: what an apply we waited for changed
        async with host.mgr as mgr:
            files = render(profile, host.target)
            live = Live(paths.config_home, store.paths, linked=host.target.has("atomic switch"))
            changes = file_changes(live, files)
            report = ApplyReport(profile.name, None, unified_diff(changes))
            timeline.mark("rendered")
            if commit.recover(store.paths.journal, paths.config_home):
                print("finished the file writes of an interrupted apply", file=log, flush=True)
            store.migrate()
            await refuse_foreign_units(mgr, profile.name, changes.writes)
            await podman.pull(host.missing_images, log)
            report.pulled = host.missing_images
            secrets = secret_updates(profile, store.paths, store.current(), host.absent_secrets)
            put_secrets(profile, secrets, store.paths)
            timeline.mark(f"{len(secrets.values)} podman secrets written")
            draft = draft_meta(loaded, host.target, secrets, options.input_key)
            generation = record(store, loaded, files, draft)
            timeline.mark("images, secrets and generation in place")
            result = await converge(mgr, live, profile, generation, log)
            report.generation, report.result = generation.number, result
            store.set_current(generation)
            if result.failed is None:
                store.set_status(generation, Status.HEALTHY)
            else:
                failed = store.set_status(generation, Status.FAILED, result.failed, result.reason)
                back = await rollback(mgr, live, store, failed, log)
                report.rolled_back_to = back.number if back else None
                if back is None and not any(g.meta.status is Status.HEALTHY for g in store.all()):
                    await withdraw(mgr, live, store, profile, log)
                    report.withdrawn = True
    report.seconds = time.monotonic() - t0
    return report
