"""Step 6, rollback: when a new generation does not become healthy, put back the newest one before
it that did, by converging to its files again (only what differs is touched). When there is none
(a first apply that failed), withdraw it: stop it, remove its files and secrets, leave no current."""

from __future__ import annotations

from typing import TextIO

from sparc_agent.apply.converge import converge
from sparc_agent.apply.plan import stack_files_on_disk
from sparc_agent.apply.secrets import restore_secrets
from sparc_agent.apply.write import remove_stack, stop_stack
from sparc_agent.host.systemd import UserManager
from sparc_agent.profile.load import load_profile
from sparc_agent.profile.model import Profile
from sparc_agent.state.generations import Generation, Store
from sparc_agent.state.live import Live
from sparc_agent.state.meta import Status


def previous_healthy(store: Store, failed: Generation) -> Generation | None:
    """The newest generation before `failed` that became healthy."""
    for gen in reversed(store.all()):
        if gen.number < failed.number and gen.meta.status is Status.HEALTHY:
            return gen
    return None


async def rollback(
    mgr: UserManager, live: Live, store: Store, failed: Generation, log: TextIO
) -> Generation | None:
    """Back to the previous healthy generation; None when there is none (left as applied)."""
    previous = previous_healthy(store, failed)
    if previous is None:
        return None
    print(
        f"{failed.meta.failed} did not become healthy: back to generation {previous.number}",
        file=log,
        flush=True,
    )
    old = load_profile(str(previous.profile_path)).profile
    restore_secrets(old, store.paths, previous, log)
    await converge(mgr, live, old, previous, log)
    store.set_current(previous)
    return previous


async def withdraw(mgr: UserManager, live: Live, store: Store, profile: Profile, log: TextIO) -> None:
    """A stack that never became healthy: nothing of it stays running or current (its failed
    generation's record stays, for `ls` and the logs)."""
    await stop_stack(mgr, profile)
    await remove_stack(mgr, live, profile, sorted(stack_files_on_disk(live)))
    store.clear_current()
    print(
        f"{profile.name}: no earlier healthy generation: stopped it and removed its files",
        file=log,
        flush=True,
    )
