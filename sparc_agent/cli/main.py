"""The `sparc-agent` command line. Thin: each command parses flags and calls one module."""

from __future__ import annotations

import atexit
import sys
from pathlib import Path

import click

from sparc_agent import __version__
from sparc_agent.cli.common import load_profile_or_exit, profile_options, reports_errors, stack_argument
from sparc_agent.errors import InvalidInput, SparcError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sparc-agent")
def main() -> None:
    """Run a multi-container GPU stack as rootless systemd services (Podman quadlets)."""


@main.command()
@profile_options
@reports_errors
def validate(profile: str, overlays: tuple[str, ...], sets: tuple[str, ...]) -> None:
    """Check PROFILE; exit 0 with a one-line summary, or 2 with FILE:LINE: key: problem."""
    loaded = load_profile_or_exit(profile, overlays, sets, this_gpu=True)
    p = loaded.profile
    gpus = sum(1 for s in p.services.values() if s.gpus is not None)
    click.echo(
        f"{profile}: stack {p.name} is valid: {len(p.services)} services ({', '.join(p.services)}),"
        f" {len(p.pod.ports)} ports, {len(p.volumes)} volumes, {len(p.secrets)} secrets,"
        f" {gpus} with GPUs; sha256 {loaded.digest[:12]}"
    )


@main.command()
@profile_options
@click.option("--out", "out", required=True, metavar="DIR", help="Directory to write into, or - for stdout.")
@click.option("--podman-version", metavar="X.Y", help="Render for this podman (default: the installed one).")
@reports_errors
def render(
    profile: str, overlays: tuple[str, ...], sets: tuple[str, ...], out: str, podman_version: str | None
) -> None:
    """Write the quadlet files and user units for PROFILE (paths relative to $XDG_CONFIG_HOME)."""
    from sparc_agent.render import AGENT_UNIT, UNIT_DIR, Target, render_agent_unit
    from sparc_agent.render import render as render_files
    from sparc_agent.state.files import write_atomic

    loaded = load_profile_or_exit(profile, overlays, sets)
    if podman_version:
        try:
            target = Target.for_podman(podman_version)
        except ValueError as exc:
            raise InvalidInput(f"--podman-version: {exc}") from None
    else:
        from sparc_agent.host.detect import detect

        target = detect().target()
    files = render_files(loaded.profile, target)
    files[f"{UNIT_DIR}/{AGENT_UNIT}"] = render_agent_unit()
    if out == "-":
        for path, text in files.items():
            click.echo(f"# --- {path}\n{text}", nl=False)
        return
    root = Path(out)
    for path, text in files.items():
        write_atomic(root / path, text.encode())
    click.echo(f"wrote {len(files)} files for podman {target.podman} (quadlet {target.quadlet}) under {root}")


@main.command()
@profile_options
@click.option("--dry-run", is_flag=True, help="Show what would change, change nothing.")
@click.option("--no-wait", is_flag=True, help="Fail instead of waiting when another apply holds the lock.")
@click.option("--timings", is_flag=True, help="Say on stderr where the time went (seconds since start).")
@reports_errors
def apply(
    profile: str,
    overlays: tuple[str, ...],
    sets: tuple[str, ...],
    dry_run: bool,
    no_wait: bool,
    timings: bool,
) -> None:
    """Apply PROFILE: write its units, start the stack in order, check health, roll back on failure.

    Exit 0 applied and healthy; 1 applied but a service failed (rolled back); 2 invalid input;
    3 environment problem (no user manager, podman missing, image unavailable, another apply running).
    """
    from sparc_agent.apply import timeline
    from sparc_agent.apply.fastpath import input_key, try_noop

    timeline.mark("command line read (interpreter and CLI imports)")
    if timings:
        atexit.register(lambda: click.echo(timeline.format_timeline(), err=True))
    if not dry_run:
        same = try_noop(profile, overlays, sets)
        timeline.mark("no-op check")
        if same is not None:
            n = same.services
            click.echo(
                f"{same.stack}: generation {same.generation} applied, {n}/{n} services healthy"
                " (0 started, 0 restarted, all unchanged; 0 files written, 0 removed)"
            )
            return
    from concurrent.futures import ThreadPoolExecutor

    from sparc_agent.apply.run import ApplyFailed, ApplyOptions
    from sparc_agent.apply.run import apply as run_apply
    from sparc_agent.host.detect import detect

    with ThreadPoolExecutor(1) as pool:
        detected = pool.submit(detect)  # the host's versions: asked while the profile is validated
        loaded = load_profile_or_exit(profile, overlays, sets, this_gpu=True)
        timeline.mark("profile validated")
        key = input_key(profile, overlays, sets)
        options = ApplyOptions(dry_run=dry_run, wait_for_lock=not no_wait, input_key=key, detected=detected)
        report = run_apply(loaded, options)
    if dry_run:
        click.echo(report.diff or f"{loaded.profile.name}: no changes", nl=not report.diff)
        return
    result = report.result
    assert result is not None
    if result.failed is not None:
        where = (
            f"rolled back to generation {report.rolled_back_to}"
            if report.rolled_back_to
            else "no earlier healthy generation: stopped it and removed its files"
            if report.withdrawn
            else "no healthy generation to roll back to; left as applied"
        )
        raise ApplyFailed(
            f"{report.stack}: generation {report.generation} failed: service {result.failed}:"
            f" {result.reason}\n{where}"
        )
    total = len(result.services)
    click.echo(
        f"{report.stack}: generation {report.generation} applied, {total}/{total} services healthy"
        f" ({result.count('started')} started, {result.count('restarted')} restarted,"
        f" {result.count('unchanged')} unchanged; {result.files_written} files written,"
        f" {result.files_removed} removed) in {report.seconds:.1f} s"
    )


@main.command()
@profile_options
@reports_errors
def diff(profile: str, overlays: tuple[str, ...], sets: tuple[str, ...]) -> None:
    """Show the file changes `apply` would make (a unified diff), changing nothing."""
    from sparc_agent.apply.run import ApplyOptions
    from sparc_agent.apply.run import apply as run_apply

    loaded = load_profile_or_exit(profile, overlays, sets)
    report = run_apply(loaded, ApplyOptions(dry_run=True))
    click.echo(report.diff or f"{loaded.profile.name}: no changes", nl=not report.diff)


@main.command()
@stack_argument
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@reports_errors
def status(name: str, as_json: bool) -> None:
    """Per service of stack NAME: unit state, health probe now, restarts, since when."""
    import json

    from sparc_agent.apply.status import format_status
    from sparc_agent.apply.status import status as stack_status

    report = stack_status(name)
    click.echo(json.dumps(report, indent=2) if as_json else format_status(report))


@main.command()
@stack_argument
@click.option(
    "--purge", is_flag=True, help="Also remove the stack's unit files, podman secrets and recorded state."
)
@reports_errors
def down(name: str, purge: bool) -> None:
    """Stop stack NAME (its files stay, so `systemctl --user start NAME.target` brings it back)."""
    from sparc_agent.apply.down import down as stack_down

    stopped = stack_down(name, purge)
    click.echo(
        f"{name}: stopped {len(stopped)} units" + (", removed its files, secrets and state" if purge else "")
    )


from sparc_agent.cli.agent import logs, restart, run  # noqa: E402 - the agent's commands live in their own module

main.add_command(run)
main.add_command(logs)
main.add_command(restart)

from sparc_agent.cli.export import export  # noqa: E402 - the exporters' group, in its own module too

main.add_command(export)

from sparc_agent.cli.probe import probe  # noqa: E402 - one service's probes, now

main.add_command(probe)


@main.command("render-agent-unit")
@click.option(
    "--exec-start",
    default="%h/.local/bin/sparc-agent",
    show_default=True,
    metavar="PATH",
    help="The sparc-agent the unit runs (`PATH run`).",
)
@reports_errors
def render_agent_unit_cmd(exec_start: str) -> None:
    """Print the agent's own user unit, sparc-agent.service (install.sh writes it to the user unit dir)."""
    from sparc_agent.render import render_agent_unit

    click.echo(render_agent_unit(exec_start=(exec_start, "run")), nl=False)


@main.command()
@click.argument("profile", required=False, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(profile: str | None, as_json: bool) -> None:
    """Check this machine for running stacks rootless; with PROFILE also its ports, GPUs and images.

    Each finding is ok, warn or fail, with a fix. Exit 0 all ok, 1 warnings, 3 blocking problems.
    """
    import json

    from sparc_agent import doctor as checks

    loaded = None
    problem = None
    if profile is not None:
        try:
            loaded = load_profile_or_exit(profile, (), ())
        except SparcError as exc:
            problem = checks.fail("profile", str(exc), f"fix it, then `sparc-agent validate {profile}`")
    report = checks.run(loaded.profile if loaded is not None else None)
    if problem is not None:
        report.checks.insert(0, problem)
    elif loaded is not None:
        report.checks.insert(0, checks.ok("profile", f"{profile}: stack {loaded.profile.name} is valid"))
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.format())
    sys.exit(report.exit_code)


if __name__ == "__main__":
    main()
