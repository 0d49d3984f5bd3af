"""Steps 2 and 3, write and reload: stop what left the profile, switch to the generation's files in
one rename (state.live; a journaled commit of flat files where quadlet < 5.3, state.commit), and have
systemd (and the quadlet generator) read them once."""

from __future__ import annotations

import contextlib
from typing import TextIO

from sparc_agent.apply.plan import FileChanges, flat_files
from sparc_agent.errors import SparcError
from sparc_agent.host import podman
from sparc_agent.host.systemd import UserManager
from sparc_agent.profile.model import Profile
from sparc_agent.render import Names, unit_of
from sparc_agent.state import commit
from sparc_agent.state.generations import Generation
from sparc_agent.state.live import Live


def removed_units(changes: FileChanges) -> list[str]:
    """Units whose files leave (a target only groups others: nothing to stop)."""
    return [unit_of(rel) for rel in changes.removes if not rel.endswith(".target")]


async def stop_removed(mgr: UserManager, changes: FileChanges, log: TextIO) -> None:
    """Stop what left the profile while its unit file still exists (systemd needs it to stop it)."""
    for unit in removed_units(changes):
        print(f"stopping {unit} (no longer in the profile)", file=log, flush=True)
        with contextlib.suppress(SparcError):
            await mgr.stop(unit)


def write(live: Live, generation: Generation, changes: FileChanges) -> bool:
    """Make the generation's files what systemd reads; True when anything changed on disk. A stack
    still in flat files (an older sparc-agent's layout) moves behind the links first (state.live)."""
    if not live.linked:
        if live.target() is not None:  # the quadlet went back below 5.3: every file flat again, then no links
            commit.commit(live.config_home, generation.files, changes.removes, live.state.journal)
            live.remove()
            return True
        if changes.empty:
            return False
        commit.commit(live.config_home, changes.writes, changes.removes, live.state.journal)
        return True
    flat = flat_files(live.config_home, live.state.name)
    if not flat and live.target() == generation.files_dir.resolve():
        return False
    live.adopt(flat)
    live.switch(generation.files_dir)
    return True


async def reload(mgr: UserManager, changes: FileChanges) -> None:
    """One daemon-reload for the whole commit; forget the failed state of units that are gone."""
    await mgr.reload()
    for unit in removed_units(changes):
        with contextlib.suppress(SparcError):
            await mgr.reset_failed(unit)


async def stop_stack(mgr: UserManager, profile: Profile) -> list[str]:
    """Stop the stack's target, services (dependents first) and pod; the units that stopped."""
    names = Names(profile.name)
    units = [names.target, *(names.service_unit(s) for s in reversed(list(profile.services))), names.pod_unit]
    stopped = []
    for unit in units:
        with contextlib.suppress(SparcError):
            await mgr.stop(unit)
            stopped.append(unit)
    return stopped


async def remove_stack(mgr: UserManager, live: Live, profile: Profile, files: list[str]) -> None:
    """Remove the stack's links (all at once) and these flat files (one commit), reload once, and
    remove its podman secrets."""
    live.remove()
    commit.commit(live.config_home, {}, files, live.state.journal)
    await mgr.reload()
    for rel in files:
        with contextlib.suppress(SparcError):
            await mgr.reset_failed(unit_of(rel))
    names = Names(profile.name)
    for secret in profile.secrets:
        podman.remove_secret(names.secret(secret))
