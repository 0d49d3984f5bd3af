"""`sparc-agent down NAME [--purge]`: stop an applied stack; with --purge remove its files and secrets."""

from __future__ import annotations

import asyncio
import contextlib

from sparc_agent.apply.status import current_generation
from sparc_agent.errors import SparcError
from sparc_agent.host import podman
from sparc_agent.host.systemd import UserManager
from sparc_agent.render import Names, unit_of
from sparc_agent.state import commit
from sparc_agent.state.paths import Paths


async def _down(stack: str, purge: bool) -> list[str]:
    store, generation, profile = current_generation(stack)
    paths = Paths.from_env()
    names = Names(profile.name)
    stopped: list[str] = []
    async with await UserManager.connect() as mgr:
        units = [
            names.target,
            *(names.service_unit(s) for s in reversed(list(profile.services))),
            names.pod_unit,
        ]
        for unit in units:
            with contextlib.suppress(SparcError):
                await mgr.stop(unit)
                stopped.append(unit)
        if purge:
            commit.recover(store.journal, paths.config_home)
            files = list(generation.files)
            commit.commit(paths.config_home, {}, files, store.journal)
            await mgr.reload()
            for rel in files:
                with contextlib.suppress(SparcError):
                    await mgr.reset_failed(unit_of(rel))
            for secret in profile.secrets:
                podman.remove_secret(names.secret(secret))
    return stopped


def down(stack: str, purge: bool = False) -> list[str]:
    return asyncio.run(_down(stack, purge))
