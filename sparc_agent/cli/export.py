"""`sparc-agent export kube|slurm|nginx`: the profile for Kubernetes, a SLURM batch job, or NGINX in front."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sparc_agent.cli.common import load_profile_or_exit, profile_options, reports_errors


def _write(text: str, out: str | None, what: str) -> None:
    if out is None or out == "-":
        click.echo(text, nl=False)
        return
    from sparc_agent.state.files import write_atomic

    write_atomic(Path(out), text.encode())
    click.echo(f"wrote {what} to {out}", err=True)


@click.group()
def export() -> None:
    """Write PROFILE for another scheduler (Kubernetes, SLURM) or the NGINX proxy in front of it."""


@export.command()
@profile_options
@click.option("-o", "--output", "out", metavar="FILE", help="Write here instead of stdout.")
@click.option("--deployment", is_flag=True, help="A Deployment instead of a bare Pod.")
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Replicas of the Deployment (with --deployment).",
)
@click.option(
    "--service-type",
    type=click.Choice(["ClusterIP", "NodePort"]),
    default="ClusterIP",
    show_default=True,
    help="Type of the Service for the published ports.",
)
@reports_errors
def kube(
    profile: str,
    overlays: tuple[str, ...],
    sets: tuple[str, ...],
    out: str | None,
    deployment: bool,
    replicas: int,
    service_type: str,
) -> None:
    """Kubernetes YAML for PROFILE: Pod or Deployment, PVCs, Services; secrets by reference only."""
    from sparc_agent.errors import InvalidInput
    from sparc_agent.export.kube import KubeOptions, export_kube

    if replicas != 1 and not deployment:
        raise InvalidInput("--replicas needs --deployment (a bare Pod has one replica)")
    loaded = load_profile_or_exit(profile, overlays, sets)
    options = KubeOptions(deployment, replicas, "NodePort" if service_type == "NodePort" else "ClusterIP")
    _write(export_kube(loaded.profile, options, source=profile), out, "Kubernetes YAML")


@export.command()
@profile_options
@click.option(
    "--runtime",
    type=click.Choice(["apptainer", "podman"]),
    default="apptainer",
    show_default=True,
    help="How the job runs each service.",
)
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
@click.option("-o", "--output", "out", metavar="FILE", help="Write here instead of stdout.")
@reports_errors
def slurm(
    profile: str,
    overlays: tuple[str, ...],
    sets: tuple[str, ...],
    runtime: str,
    partition: str,
    time_limit: str,
    gpus: int | None,
    cpus: int | None,
    mem: str | None,
    account: str | None,
    qos: str | None,
    log_pattern: str | None,
    out: str | None,
) -> None:
    """A SLURM batch script that runs PROFILE's services on one node (apptainer or podman)."""
    from sparc_agent.export import partitions
    from sparc_agent.export.slurm import SlurmOptions, export_slurm

    loaded = load_profile_or_exit(profile, overlays, sets)
    options = SlurmOptions(
        runtime="podman" if runtime == "podman" else "apptainer",
        partition=partition,
        time=time_limit,
        gpus=gpus,
        cpus=cpus,
        mem=mem,
        account=account,
        qos=qos,
        output=log_pattern,
    )
    text = export_slurm(loaded.profile, options, source=profile)
    if partition not in partitions.PARTITIONS:
        click.echo(
            f"note: partition {partition} is not in the known table; its limits are left to the scheduler"
            " (check with sbatch --test-only)",
            err=True,
        )
    _write(text, out, "SLURM script")
    if out not in (None, "-"):
        Path(out).chmod(0o755)
    sys.stdout.flush()


@export.command()
@profile_options
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
@click.option("-o", "--output", "out", metavar="FILE", help="Write here instead of stdout.")
@reports_errors
def nginx(
    profile: str,
    overlays: tuple[str, ...],
    sets: tuple[str, ...],
    api: str,
    signal: str,
    server_name: str,
    listen: str,
    upstream: str,
    out: str | None,
) -> None:
    """NGINX reverse proxy for PROFILE: /api/ -> the MAS, /signal/ -> signaling (WebSocket)."""
    from sparc_agent.export.nginx import NginxOptions, export_nginx

    loaded = load_profile_or_exit(profile, overlays, sets)
    options = NginxOptions(api=api, signal=signal, server_name=server_name, listen=listen, upstream=upstream)
    _write(export_nginx(loaded.profile, options, source=profile), out, "NGINX config")
