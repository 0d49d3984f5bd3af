"""Between write and start: make systemd run on the wanted files, and find what runs an older generation.

Files on disk say what is wanted, not what runs. After a killed apply the files may be new while
systemd still holds the old ones (NeedDaemonReload) or while the services still run the processes
they were started with. So this step reloads when a file differs from what the last reload loaded
(by state.inputs' record, or systemd's NeedDaemonReload), and a running service counts as stale
when one of its inputs (its container and volume files, the pod's, its secrets) took effect after
its main process started (ExecMainStartTimestamp over D-Bus).
"""

from __future__ import annotations

import asyncio

from sparc_agent.apply.plan import FileChanges
from sparc_agent.apply.write import reload
from sparc_agent.host.systemd import UnitState, UserManager
from sparc_agent.profile.model import Profile
from sparc_agent.render import Names
from sparc_agent.state.generations import Store
from sparc_agent.state.inputs import Inputs, now_us
from sparc_agent.state.paths import StackPaths


async def load(
    mgr: UserManager,
    paths: StackPaths,
    profile: Profile,
    files: dict[str, str],
    changes: FileChanges,
    switched: bool,
) -> tuple[bool, Inputs]:
    """Reload when the files were just switched or anything systemd loaded differs from the wanted
    files; (reloaded, the record)."""
    inputs = Inputs.read(paths.inputs)
    wanted = Store.hashes(files)
    names = Names(profile.name)
    units = [names.target, names.pod_unit, *(names.service_unit(s) for s in profile.services)]
    stale_load = (
        switched
        or bool(inputs.mismatched(wanted))
        or any(s.need_daemon_reload for s in await asyncio.gather(*(mgr.unit_state(u) for u in units)))
    )
    if stale_load:
        await reload(mgr, changes)
    inputs.loaded(wanted, now_us() if stale_load else None)
    inputs.write(paths.inputs)
    return stale_load, inputs


def _pod_inputs(names: Names) -> list[str]:
    return [names.pod_quadlet, names.pod_unit_file]


def started_before(state: UnitState, since_us: int) -> bool:
    """A running unit whose main process is older than `since_us` (0: nothing newer to run)."""
    return state.is_active and since_us > 0 and state.exec_main_start_timestamp < since_us


async def pod_stale(mgr: UserManager, profile: Profile, inputs: Inputs) -> bool:
    names = Names(profile.name)
    return started_before(await mgr.unit_state(names.pod_unit), inputs.since({"files": _pod_inputs(names)}))


async def stale_services(mgr: UserManager, profile: Profile, inputs: Inputs) -> set[str]:
    """Running services whose container, volume or pod files, or secrets, took effect after they started."""
    names = Names(profile.name)
    services = list(profile.services)
    states = await asyncio.gather(*(mgr.unit_state(names.service_unit(s)) for s in services))
    stale = set()
    for name, state in zip(services, states, strict=True):
        svc = profile.services[name]
        files = [names.container_file(name), *_pod_inputs(names)]
        files += [names.volume_file(m.source) for m in svc.volumes if m.is_named_volume]
        if started_before(state, inputs.since({"files": files, "secrets": list(svc.secrets.values())})):
            stale.add(name)
    return stale
