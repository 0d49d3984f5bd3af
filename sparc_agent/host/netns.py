"""A pod's network namespace: which process holds it, and how to start a command inside it.

Podman's answer to "which namespace" is the pod's infra container: its process holds the network
namespace every container of the pod joins. `nsenter -t PID -n` enters it as root. Rootless, that
namespace belongs to podman's user namespace, and setns(2) into a network namespace needs
CAP_SYS_ADMIN in the user namespace that owns it: `-U` joins that user namespace first (the user
owns it, so no privilege is needed) and `--preserve-credentials` keeps our uid and groups instead of
becoming the namespace's root. Nothing else (`podman unshare` would keep a podman process alive as
the command's parent).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence

from sparc_agent.errors import EnvironmentProblem, SparcError
from sparc_agent.host.podman import podman_path
from sparc_agent.host.process import Process, kill_group, spawn

INSPECT_TIMEOUT_S = 20.0


class PodNotRunning(SparcError):
    """The pod (or its infra process) does not exist: nothing of it can be running."""


async def _podman(*args: str) -> tuple[int, str, str]:
    """A podman command, awaited (the agent's loop keeps running meanwhile)."""
    proc = await spawn([podman_path(), *args])
    try:
        async with asyncio.timeout(INSPECT_TIMEOUT_S):
            out, err = await proc.communicate()
    except TimeoutError:
        kill_group(proc)
        await proc.wait()
        raise EnvironmentProblem(
            f"podman {' '.join(args[:2])} took longer than {INSPECT_TIMEOUT_S:g}s"
        ) from None
    return proc.returncode or 0, out.decode(errors="replace").strip(), err.decode(errors="replace").strip()


async def infra_pid(pod: str) -> int:
    """The host PID of the pod's infra process. PodNotRunning when there is none."""
    code, infra, err = await _podman("pod", "inspect", "--format", "{{.InfraContainerID}}", pod)
    if code != 0:
        if "no such pod" in err.lower():
            raise PodNotRunning(f"pod {pod} does not exist")
        raise EnvironmentProblem(f"podman pod inspect {pod}: {err or f'exit {code}'}")
    if not infra:
        raise EnvironmentProblem(f"pod {pod} has no infra container: its network namespace cannot be found")
    code, pid, err = await _podman("container", "inspect", "--format", "{{.State.Pid}}", infra)
    if code != 0:
        if "no such container" in err.lower():
            raise PodNotRunning(f"pod {pod} has no infra container any more")
        raise EnvironmentProblem(f"podman container inspect {infra[:12]}: {err or f'exit {code}'}")
    if not pid.isdigit() or int(pid) <= 0:
        raise PodNotRunning(f"pod {pod} is not running")
    return int(pid)


def enter_argv(pid: int, argv: Sequence[str], rootless: bool | None = None) -> list[str]:
    """argv run inside the network namespace of process `pid` (and nothing else of it)."""
    nsenter = shutil.which("nsenter")
    if nsenter is None:
        raise EnvironmentProblem("nsenter not found on PATH (util-linux): needed to probe inside the pod")
    if rootless is None:
        rootless = os.geteuid() != 0
    user = ["-U", "--preserve-credentials"] if rootless else []
    return [nsenter, "-t", str(pid), *user, "-n", "--", *argv]


async def spawn_inside(pid: int, argv: Sequence[str]) -> Process:
    """Start argv in the network namespace of `pid`, talking over pipes (stdin, stdout, stderr).

    Its own session: a terminal's ^C reaches the CLI, which closes the prober itself."""
    return await spawn(enter_argv(pid, argv), stdin="pipe", new_session=True)
