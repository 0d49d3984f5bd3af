"""Steps 2 and 3, write and reload: stop what left the profile, switch the files as one commit
(state.commit), and have systemd (and the quadlet generator) read them once."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TextIO

from sparc_agent.apply.plan import FileChanges
from sparc_agent.errors import SparcError
from sparc_agent.host.systemd import UserManager
from sparc_agent.render import unit_of
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
