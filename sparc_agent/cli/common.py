"""What every CLI module shares: error reporting, and the profile inputs (PROFILE, -f, --set)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sparc_agent.errors import SparcError

if TYPE_CHECKING:  # the model pulls in pydantic (~0.3 s): only commands that need it import it
    from sparc_agent.profile.load import LoadedProfile

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(func: F) -> F:
    """Our own errors become one clear message and their exit code, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SparcError as exc:
            click.echo(str(exc), err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


def stack_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """NAME of an applied stack follows the profile's name rules, so that no `../` reaches a path."""
    from sparc_agent.profile.names import MAX_STACK, name_problem

    problem = name_problem(value, "stack name", MAX_STACK)
    if problem:
        raise click.BadParameter(problem, ctx, param)  # a usage error: exit 2
    return value


def stack_argument(func: F) -> F:
    return click.argument("name", callback=stack_name)(func)


def profile_options(func: F) -> F:
    """PROFILE, -f OVERLAY..., --set KEY=VALUE...: the inputs of every command that reads a profile."""
    func = click.option(
        "-f",
        "overlays",
        multiple=True,
        metavar="OVERLAY",
        help="Overlay file merged over the profile (repeatable).",
    )(func)
    func = click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override one key, e.g. services.mas.env.X=1.",
    )(func)
    return click.argument("profile", type=click.Path(dir_okay=False))(func)


def load_profile_or_exit(
    profile: str, overlays: Sequence[str], sets: Sequence[str], *, this_gpu: bool = False
) -> LoadedProfile:
    """Load and validate (a ProfileInvalid ends the command with exit 2); print warnings on stderr.

    this_gpu: with `gpu.memory: detect`, also check the GPU memory budgets against this machine's GPU
    (validate and apply; not the exporters, whose target is another machine)."""
    from sparc_agent.profile.load import load_profile

    loaded = load_profile(profile, overlays, sets)
    for warning in loaded.warnings:
        click.echo(f"{warning.location}: {_key_path(warning.path)}: warning: {warning.message}", err=True)
    if this_gpu:
        _check_detected_gpu(loaded)
    return loaded


def _check_detected_gpu(loaded: LoadedProfile) -> None:
    from sparc_agent.host.gpu import GpuUnavailable, open_nvml
    from sparc_agent.profile import rules
    from sparc_agent.profile.load import Problem, ProfileInvalid

    profile = loaded.profile
    if profile.gpu.memory != "detect" or all(
        rules.gpu_budget_of(profile, n) is None for n in profile.services
    ):
        return
    try:
        nvml = open_nvml()
        try:
            gpus = nvml.gpus()
        finally:
            nvml.close()
    except GpuUnavailable as exc:
        click.echo(f"note: GPU memory budgets not checked (gpu.memory: detect): {exc}", err=True)
        return
    if not gpus:
        click.echo("note: GPU memory budgets not checked: NVML lists no GPU", err=True)
        return
    gpu = min(gpus, key=lambda g: g.total)  # the services may land on any of them
    findings = rules.gpu_budgets(profile, gpu.total, f"detected: GPU {gpu.index}, {gpu.name}")
    problems = [Problem(loaded.sources.locate(f.path), f.path, f.message) for f in findings]
    if problems:
        raise ProfileInvalid(problems)


def _key_path(path: tuple[str | int, ...]) -> str:
    from sparc_agent.profile.load import format_path

    return format_path(path)
