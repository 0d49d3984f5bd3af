"""Steps 2 and 3, write and reload: stop what left the profile, switch the files as one commit
(state.commit), and have systemd (and the quadlet generator) read them once."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TextIO

from sparc_agent.apply.plan import FileChanges
from sparc_agent.errors import SparcError
from sparc_agent.host import podman
from sparc_agent.host.systemd import UserManager
from sparc_agent.profile.model import Profile
from sparc_agent.render import Names, unit_of
from sparc_agent.state import commit


def removed_units(changes: FileChanges) -> list[str]:
    """Units whose files leave (a target only groups others: nothing to stop)."""
    return [unit_of(rel) for rel in changes.removes if not rel.endswith(".target")]


async def stop_removed(mgr: UserManager, changes: FileChanges, log: TextIO) -> None:
    """Stop what left the profile while its unit file still exists (systemd needs it to stop it)."""
    for unit in removed_units(changes):
        print(f"stopping {unit} (no longer in the profile)", file=log, flush=True)
        with contextlib.suppress(SparcError):
            await mgr.stop(unit)


def write(config_home: Path, journal: Path, changes: FileChanges) -> None:
    commit.commit(config_home, changes.writes, changes.removes, journal)


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


async def remove_stack(
    mgr: UserManager, config_home: Path, journal: Path, profile: Profile, files: list[str]
) -> None:
    """Remove these files of the stack (one commit, one reload) and its podman secrets."""
    commit.commit(config_home, {}, files, journal)
    await mgr.reload()
    for rel in files:
        with contextlib.suppress(SparcError):
            await mgr.reset_failed(unit_of(rel))
    names = Names(profile.name)
    for secret in profile.secrets:
        podman.remove_secret(names.secret(secret))
