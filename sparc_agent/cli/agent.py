"""CLI commands of the long-running side: `run`, `logs`, `restart` (added to the group in cli.py)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from sparc_agent.cli.common import reports_errors, stack_argument
from sparc_agent.errors import EnvironmentProblem, InvalidInput

F = TypeVar("F", bound=Callable[..., Any])


@click.command()
@click.argument("profiles", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "--config",
    "config_dir",
    type=click.Path(file_okay=False),
    help="Apply the profiles in DIR at start (default: ~/.config/sparc-agent/profiles).",
)
@click.option("--no-apply", is_flag=True, help="Only supervise what is applied; apply nothing at start.")
@click.option(
    "--log-format",
    type=click.Choice(["journal", "json", "console"]),
    help="Default: journal under systemd (JOURNAL_STREAM set), else json.",
)
@reports_errors
def run(profiles: tuple[str, ...], config_dir: str | None, no_apply: bool, log_format: str | None) -> None:
    """Apply PROFILES (or the profiles dir), then keep every applied stack healthy until SIGTERM.

    Adopts running services without restarting them; restarts unhealthy or failed ones with capped
    exponential backoff; gives up (FATAL) after the policy's max_restarts within its window.
    SIGTERM stops the agent only, never the stacks; SIGHUP re-applies and re-reads.
    """
    from sparc_agent.agent.runner import AgentOptions
    from sparc_agent.agent.runner import run as run_agent

    options = AgentOptions(
        profiles=profiles,
        config_dir=Path(config_dir) if config_dir else None,
        apply=not no_apply,
        log_format=log_format,
    )
    sys.exit(run_agent(options))


def journal_matches(stack: str, service: str | None, services: list[str]) -> list[str]:
    """journalctl match arguments: the agent's events about the stack (or one service) OR the container
    units' own output. Fields of one name are ORed, different names ANDed, `+` separates alternatives."""
    from sparc_agent.profile.names import AGENT_UNIT, Names

    names = Names(stack)
    agent = [f"_SYSTEMD_USER_UNIT={AGENT_UNIT}", f"SPARC_STACK={stack}"]
    if service is not None:
        return [*agent, f"SPARC_SERVICE={service}", "+", f"_SYSTEMD_USER_UNIT={names.service_unit(service)}"]
    units = [f"_SYSTEMD_USER_UNIT={names.service_unit(name)}" for name in services]
    out = list(agent)
    for unit in units:
        out += ["+", unit]
    return out


@click.command()
@stack_argument
@click.argument("service", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new entries.")
@click.option("-n", "--lines", default=None, metavar="N", help="Show the last N entries.")
@click.option("-o", "--output", default=None, metavar="MODE", help="journalctl output mode, e.g. verbose.")
@click.option("--since", default=None, help="e.g. '10 min ago'")
@reports_errors
def logs(
    name: str, service: str | None, follow: bool, lines: str | None, output: str | None, since: str | None
) -> None:
    """Journal of stack NAME: the agent's events about it and its containers' output (or SERVICE's only)."""
    from sparc_agent.apply.status import current_generation
    from sparc_agent.host.process import replace_with

    _, _, profile = current_generation(name)
    if service is not None and service not in profile.services:
        raise InvalidInput(f"stack {name} has no service {service!r} (it has: {', '.join(profile.services)})")
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        raise EnvironmentProblem("journalctl not found")
    argv = [journalctl, "--no-pager"] if not follow else [journalctl]
    if follow:
        argv.append("-f")
    if lines:
        argv += ["-n", lines]
    if output:
        argv += ["-o", output]
    if since:
        argv += ["--since", since]
    argv += journal_matches(name, service, list(profile.services))
    sys.stdout.flush()
    replace_with(argv)


@click.command()
@stack_argument
@click.argument("service")
@reports_errors
def restart(name: str, service: str) -> None:
    """Restart SERVICE of stack NAME now, clearing FATAL.

    Resets systemd's failed state and start-limit counter (the unit's, and its pod's when that failed)
    and restarts the unit. A running agent sees a start it did not make and takes it as a fresh start:
    FATAL is cleared and the restart budget reset.
    """
    import asyncio

    from sparc_agent.apply.status import current_generation
    from sparc_agent.host.systemd import UserManager
    from sparc_agent.render import Names

    _, _, profile = current_generation(name)
    if service not in profile.services:
        raise InvalidInput(f"stack {name} has no service {service!r} (it has: {', '.join(profile.services)})")
    names = Names(name)
    unit = names.service_unit(service)

    async def go() -> str:
        async with await UserManager.connect() as mgr:
            # its pod too: the pod's own restarts (while a port was taken) may have spent its start limit
            if (await mgr.unit_state(names.pod_unit)).is_failed:
                await mgr.reset_failed(names.pod_unit)
            await mgr.reset_failed(unit)
            await mgr.restart(unit)
            state = await mgr.unit_state(unit)
            return f"{state.active_state}/{state.sub_state}"

    click.echo(f"{name}/{service}: restarted {unit} ({asyncio.run(go())})")
