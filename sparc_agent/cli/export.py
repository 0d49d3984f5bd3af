"""`sparc-agent export kube|slurm|nginx`: the profile for Kubernetes, a SLURM batch job, or NGINX in front."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sparc_agent.cli.common import load_profile_or_exit, profile_options, reports_errors

if TYPE_CHECKING:  # the model pulls in pydantic: imported by the commands that run
    from sparc_agent.profile.model import Profile

Exporter = Callable[..., str]


def _write(text: str, out: str | None, what: str, mode: int) -> None:
    if out is None or out == "-":
        click.echo(text, nl=False)
        return
    from sparc_agent.state.files import write_atomic

    # the mode is set on the open file before it takes the name (fchmod), not on the path afterwards,
    # where a file swapped in under that name (a link elsewhere) would get it
    write_atomic(Path(out), text.encode(), mode=mode)
    click.echo(f"wrote {what} to {out}", err=True)


def _exporter(what: str, mode: int = 0o644) -> Callable[[Exporter], Callable[..., None]]:
    """What every export command shares: PROFILE, -f, --set and -o; load, export, write.

    The decorated function gets the loaded profile, the PROFILE argument as given (for the header
    comment) and its own options, and returns the text.
    """

    def decorate(build: Exporter) -> Callable[..., None]:
        @profile_options
        @click.option("-o", "--output", "out", metavar="FILE", help="Write here instead of stdout.")
        @reports_errors
        @functools.wraps(build)
        def command(
            profile: str, overlays: tuple[str, ...], sets: tuple[str, ...], out: str | None, **options: Any
        ) -> None:
            loaded = load_profile_or_exit(profile, overlays, sets)
            _write(build(loaded.profile, profile, **options), out, what, mode)

        return command

    return decorate


def _choice(flag: str, choices: list[str], help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """An option taking one of `choices`, the first by default."""
    return click.option(flag, type=click.Choice(choices), default=choices[0], show_default=True, help=help)


@click.group()
def export() -> None:
    """Write PROFILE for another scheduler (Kubernetes, SLURM) or the NGINX proxy in front of it."""


@export.command()
@_exporter("Kubernetes YAML")
@click.option("--deployment", is_flag=True, help="A Deployment instead of a bare Pod.")
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Replicas of the Deployment (with --deployment).",
)
@_choice("--service-type", ["ClusterIP", "NodePort"], "Type of the Service for the published ports.")
def kube(profile: Profile, source: str, deployment: bool, replicas: int, service_type: str) -> str:
    """Kubernetes YAML for PROFILE: Pod or Deployment, PVCs, Services; secrets by reference only."""
    from sparc_agent.errors import InvalidInput
    from sparc_agent.export.kube import KubeOptions, export_kube

    if replicas != 1 and not deployment:
        raise InvalidInput("--replicas needs --deployment (a bare Pod has one replica)")
    options = KubeOptions(deployment, replicas, "NodePort" if service_type == "NodePort" else "ClusterIP")
    return export_kube(profile, options, source=source)


@export.command()
@_exporter("SLURM script", mode=0o755)
@_choice("--runtime", ["apptainer", "podman"], "How the job runs each service.")
@click.option("--partition", default="hpg-ai", show_default=True, help="SLURM partition.")
@click.option(
    "--time",
    "time_limit",
    default="7-00:00:00",
    show_default=True,
    metavar="TIME",
    help="Time limit (D-HH:MM:SS, HH:MM:SS, ...).",
)
@click.option(
    "--gpus", type=click.IntRange(min=0), help="GPUs for the job (default: what the services need)."
)
@click.option("--cpus", type=click.IntRange(min=1), help="CPUs for the job (default: sum of the services').")
@click.option("--mem", metavar="SIZE", help="Memory for the job, e.g. 64g (default: sum of the services').")
@click.option("--account", help="SLURM account (#SBATCH --account).")
@click.option("--qos", help="SLURM QOS (#SBATCH --qos).")
@click.option("--log", "log_pattern", metavar="PATTERN", help="#SBATCH --output (default STACK_%j.log).")
def slurm(
    profile: Profile, source: str, runtime: str, time_limit: str, log_pattern: str | None, **job: Any
) -> str:
    """A SLURM batch script that runs PROFILE's services on one node (apptainer or podman)."""
    from sparc_agent.export import partitions
    from sparc_agent.export.slurm import SlurmOptions, export_slurm, warnings

    options = SlurmOptions(
        runtime="podman" if runtime == "podman" else "apptainer", time=time_limit, output=log_pattern, **job
    )
    text = export_slurm(profile, options, source=source)
    if options.partition not in partitions.PARTITIONS:
        click.echo(
            f"note: partition {options.partition} is not in the known table; its limits are left to the"
            " scheduler (check with sbatch --test-only)",
            err=True,
        )
    for warning in warnings(profile, options):
        click.echo(f"warning: {warning}", err=True)
    return text


@export.command()
@_exporter("NGINX config")
@click.option("--api", default="mas", show_default=True, metavar="SERVICE[:PORT]", help="What /api/ reaches.")
@click.option(
    "--signal",
    default="signaling",
    show_default=True,
    metavar="SERVICE[:PORT]",
    help="What /signal/ reaches.",
)
@click.option("--server-name", default="_", show_default=True, help="NGINX server_name.")
@click.option("--listen", default="80", show_default=True, help="NGINX listen, e.g. 443 ssl.")
@click.option(
    "--upstream",
    default="127.0.0.1",
    show_default=True,
    metavar="HOST",
    help="Where NGINX reaches the ports.",
)
def nginx(profile: Profile, source: str, **options: str) -> str:
    """NGINX reverse proxy for PROFILE: /api/ -> the MAS, /signal/ -> signaling (WebSocket)."""
    from sparc_agent.export.nginx import NginxOptions, export_nginx

    return export_nginx(profile, NginxOptions(**options), source=source)
