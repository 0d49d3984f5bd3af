"""`sparc-agent probe PROFILE_OR_STACK SERVICE`: run a service's probes once, now, from here."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from sparc_agent.cli.common import reports_errors
from sparc_agent.errors import InvalidInput


@click.command("probe")
@click.argument("profile_or_stack")
@click.argument("service")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per probe, one a line.")
@click.option(
    "--host",
    default=None,
    help="Where the probes connect to [default: 127.0.0.1; inside the pod for a port it does not publish].",
)
@reports_errors
def probe(profile_or_stack: str, service: str, as_json: bool, host: str | None) -> None:
    """Run SERVICE's probes (its health probe, and webrtc if it has one) once and print each result.

    PROFILE_OR_STACK is a profile file, or the name of an applied stack (its current profile).
    Exit 0 when all passed, 1 when one failed, 2 on bad input.
    """
    results = asyncio.run(run_service_probes(_profile(profile_or_stack), service, host))
    for kind, result in results:
        click.echo(
            json.dumps(as_record(service, kind, result)) if as_json else format_result(service, kind, result)
        )
    sys.exit(0 if all(r.ok for _, r in results) else 1)


def _profile(profile_or_stack: str) -> Any:
    from sparc_agent.cli.common import load_profile_or_exit

    path = Path(profile_or_stack)
    if not path.is_file() and "/" not in profile_or_stack:
        from sparc_agent.state.generations import Store
        from sparc_agent.state.paths import Paths

        current = Store(Paths.from_env().stack_state(profile_or_stack)).current()
        if current is None:
            raise InvalidInput(f"{profile_or_stack}: neither a profile file nor an applied stack")
        path = current.profile_path
    return load_profile_or_exit(str(path), (), ()).profile


async def run_service_probes(profile: Any, service: str, host: str | None) -> list[tuple[str, Any]]:
    from sparc_agent.probes import run_probe
    from sparc_agent.probes.inpod import PodProbers
    from sparc_agent.probes.kinds import spec_from_fields
    from sparc_agent.profile.rules import probe_pod
    from sparc_agent.render import Names

    svc = profile.services.get(service)
    if svc is None:
        raise InvalidInput(
            f"no service {service!r} in stack {profile.name} (services: {', '.join(profile.services)})"
        )
    if svc.health is None:
        raise InvalidInput(f"{service} has no health probe")
    specs = [(svc.health.kind, svc.health.spec)]
    specs += [(kind, spec_from_fields(kind, dict(block))) for kind, block in svc.health.apart.items()]
    sources = {n: {"file": d.file} if d.file else {"env": d.env} for n, d in profile.secrets.items()}
    container = Names(profile.name).container(service)
    pod = probe_pod(profile, service) if host is None else None  # an address given: probe that one
    results = []
    async with PodProbers() as probers:
        for i, (kind, spec) in enumerate(specs):
            if pod is not None and i == 0:  # the service's own probe; webrtc's ports are published
                result = await probers.run(spec, container=container, pod=pod)
            else:
                result = await run_probe(spec, host=host or "127.0.0.1", container=container, secrets=sources)
            results.append((kind, result))
    return results


def as_record(service: str, kind: str, result: Any) -> dict[str, Any]:
    return {
        "service": service,
        "kind": kind,
        "ok": result.ok,
        "outcome": result.outcome.value,
        "phase": result.phase,
        "timings": dict(result.timings),
        "hint": result.hint,
        "detail": result.detail,
        "cause": result.cause,
        "seconds": round(result.latency_s, 4),
        **({"facts": dict(result.facts)} if result.facts else {}),
    }


def format_result(service: str, kind: str, result: Any) -> str:
    verdict = "ok" if result.ok else result.outcome.value.upper()
    at = f" at {result.phase}" if result.phase and not result.ok else ""
    lines = [f"{service} {kind}: {verdict}{at} in {result.latency_s:.2f}s: {result.detail}"]
    for phase, seconds in result.timings.items():
        lines.append(f"  {phase:<12} {seconds:7.3f}s")
    if result.hint:
        lines.append(f"  hint: {result.hint}")
    if result.cause:
        lines.append(f"  points at: service {result.cause}")
    return "\n".join(lines)
