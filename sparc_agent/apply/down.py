"""`sparc-agent down NAME [--purge]`: stop an applied stack; with --purge remove its files, secrets
and state (generations, records), so nothing, the agent included, knows the stack any more.

--purge removes only files that still carry this stack's sparc-agent header: a file someone
replaced by hand since is left where it is, and said so.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import TextIO

from sparc_agent.apply.lock import apply_lock
from sparc_agent.apply.status import current_generation
from sparc_agent.apply.write import remove_stack, stop_stack
from sparc_agent.host.systemd import UserManager
from sparc_agent.profile.model import Profile
from sparc_agent.render import owner
from sparc_agent.state import commit
from sparc_agent.state.generations import Store
from sparc_agent.state.live import Live
from sparc_agent.state.paths import Paths


def ours_and_foreign(config_home: Path, stack: str, files: list[str]) -> tuple[list[str], list[str]]:
    """Of a generation's files, those still ours on disk, and those replaced by someone else."""
    ours: list[str] = []
    foreign: list[str] = []
    for rel in files:
        try:
            text = (config_home / rel).read_text(errors="replace")
        except FileNotFoundError:
            continue
        (ours if owner(text) == stack else foreign).append(rel)
    return ours, foreign


async def purge(mgr: UserManager, config_home: Path, store: Store, profile: Profile, log: TextIO) -> None:
    """Remove the stack's links and files (ours only), podman secrets and state directory."""
    with apply_lock(store.paths.lock, True, log):
        commit.recover(store.paths.journal, config_home)
        files = sorted({rel for gen in store.all() for rel in gen.meta.files})
        ours, foreign = ours_and_foreign(config_home, profile.name, files)
        for rel in foreign:
            print(
                f"kept {config_home / rel}: it is no longer sparc-agent's (no header of {profile.name})",
                file=log,
            )
        await remove_stack(mgr, Live(config_home, store.paths), profile, ours)
        shutil.rmtree(store.root)  # the agent drops a stack whose state is gone


async def _down(stack: str, purge_too: bool, log: TextIO) -> list[str]:
    store, _, profile = current_generation(stack)
    async with await UserManager.connect() as mgr:
        stopped = await stop_stack(mgr, profile)
        if purge_too:
            await purge(mgr, Paths.from_env().config_home, store, profile, log)
    return stopped


def down(stack: str, purge: bool = False, log: TextIO = sys.stderr) -> list[str]:
    return asyncio.run(_down(stack, purge, log))
