"""`sparc-agent status NAME`: what runs for an applied stack, its probes, and the agent's view of it."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sparc_agent.errors import InvalidInput
from sparc_agent.host.systemd import UserManager
from sparc_agent.probes.health import probe_once
from sparc_agent.probes.inpod import PodProbers
from sparc_agent.profile.load import load_profile
from sparc_agent.profile.model import Profile
from sparc_agent.profile.rules import probe_pod
from sparc_agent.render import Names
from sparc_agent.state.generations import Generation, Store
from sparc_agent.state.paths import Paths, StackPaths


def current_generation(stack: str, paths: Paths | None = None) -> tuple[Store, Generation, Profile]:
    """The stack's current generation and its profile; exit 2 when the stack was never applied."""
    store = Store((paths or Paths.from_env()).stack(stack))
    generation = store.current()
    if generation is None:
        raise InvalidInput(f"no stack {stack!r} has been applied by this user (nothing under {store.root})")
    return store, generation, load_profile(str(generation.profile_path)).profile


@dataclass
class ServiceStatus:
    service: str
    unit: str
    state: str  # active/running, failed/failed, ...
    container: str
    health: str  # ok, failed: ..., error: ..., no probe, not running
    probe_ms: float | None
    restarts: int
    since: str
    supervisor: dict[str, Any] | None = None  # the running agent's view (agent-state.json), if any
    gpu_memory_bytes: int | None = None  # what its processes hold on the GPU now (NVML), GPU services only
    gpu_memory_budget_bytes: int | None = None  # resources.gpu_memory


def agent_view(stack: StackPaths) -> dict[str, Any] | None:
    """The running agent's state file for this stack, or None when there is none or its agent is gone."""
    import json
    import os

    try:
        data: dict[str, Any] = json.loads(stack.agent_state.read_text())
        os.kill(int(data["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data


async def _status(stack: str) -> dict[str, Any]:
    store, generation, profile = current_generation(stack)
    names = Names(profile.name)
    rows: list[ServiceStatus] = []
    agent = agent_view(store.paths)
    watched: dict[str, Any] = agent.get("services", {}) if agent else {}
    async with await UserManager.connect() as mgr, PodProbers() as probers:

        async def one(name: str) -> ServiceStatus:
            unit = names.service_unit(name)
            state = await mgr.unit_state(unit)
            health, latency = "no probe", None
            svc = profile.services[name]
            seen = watched.get(name)
            probe = (seen or {}).get("probe")
            if svc.oneshot:  # runs once per generation: done, failed, or not run (yet)
                health = (
                    "completed"
                    if state.is_active
                    else (f"failed ({state.result})" if state.is_failed else "not run")
                )
            elif not state.is_active:
                health = "not running"
            elif probe:  # the agent probes anyway: show its last result instead of probing again
                health = "ok" if probe["outcome"] == "ok" else f"{probe['outcome']}: {probe['detail']}"
                latency = probe["latency_ms"]
            elif svc.health is not None:
                result = await probe_once(
                    svc.health, names.container(name), probers, probe_pod(profile, name)
                )
                health = "ok" if result.ok else f"{result.outcome.value}: {result.detail}"
                latency = round(result.latency_s * 1000, 1)
            since = (
                dt.datetime.fromtimestamp(state.active_enter_timestamp / 1e6, dt.UTC).isoformat(
                    timespec="seconds"
                )
                if state.active_enter_timestamp
                else ""
            )
            return ServiceStatus(
                name,
                unit,
                f"{state.active_state}/{state.sub_state}",
                names.container(name),
                health,
                latency,
                state.n_restarts,
                since,
                seen,
            )

        rows = list(await asyncio.gather(*(one(n) for n in profile.services)))
    gpu_note = _gpu_memory(profile, rows)
    return {
        "stack": stack,
        "generation": generation.number,
        "applied": generation.meta.created,
        "status": generation.meta.status.value,
        "agent": {k: agent[k] for k in ("pid", "updated", "connected", "generation")} if agent else None,
        "services": [asdict(r) for r in rows],
        "gpu_note": gpu_note,
    }


def _gpu_memory(profile: Profile, rows: list[ServiceStatus]) -> str | None:
    """Fill in each GPU service's memory from NVML; the reason when it cannot be read."""
    from sparc_agent.host.gpu import UNATTRIBUTED, GpuUnavailable, gib, sample_by_unit
    from sparc_agent.profile.rules import gpu_budget_of

    gpu_rows = [r for r in rows if profile.services[r.service].gpus is not None]
    if not gpu_rows:
        return None
    try:
        by_unit = sample_by_unit()
    except GpuUnavailable as exc:
        return f"GPU memory unknown: {exc}"
    for row in gpu_rows:
        row.gpu_memory_bytes = by_unit.get(row.unit, 0)
        row.gpu_memory_budget_bytes = gpu_budget_of(profile, row.service)
    lost = by_unit.get(UNATTRIBUTED, 0)
    return f"GPU memory of processes in no service's unit: {gib(lost)} (not counted above)" if lost else None


def status(stack: str) -> dict[str, Any]:
    return asyncio.run(_status(stack))


def format_status(report: dict[str, Any]) -> str:
    gen = f"generation {report['generation']} ({report['status']}, applied {report['applied']})"
    header = f"{report['stack']}: {gen}"
    rows = [("SERVICE", "STATE", "HEALTH", "RESTARTS", "SINCE")]
    for s in report["services"]:
        health = s["health"] + (f" ({s['probe_ms']} ms)" if s["probe_ms"] is not None else "")
        rows.append((s["service"], s["state"], health, str(s["restarts"]), s["since"]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows]
    healthy = sum(
        1
        for s in report["services"]
        if s["health"] in ("ok", "no probe", "completed") and s["state"].startswith("active")
    )
    out = [header, *lines, f"{healthy}/{len(report['services'])} healthy", *_format_gpu(report)]
    if report.get("agent"):
        out += ["", _format_supervisor(report)]
    else:
        out.append("agent: not running (nothing restarts failed services: `sparc-agent run`)")
    return "\n".join(out)


def _format_gpu(report: dict[str, Any]) -> list[str]:
    from sparc_agent.host.gpu import gib

    note = [str(report["gpu_note"])] if report.get("gpu_note") else []
    parts = []
    for s in report["services"]:
        used, budget = s.get("gpu_memory_bytes"), s.get("gpu_memory_budget_bytes")
        if used is None:
            continue
        text = f"{s['service']} {gib(used)}"
        if budget is not None:
            text += f" of {gib(budget)}" + (" (OVER BUDGET)" if used > budget else "")
        parts.append(text)
    return ([f"GPU memory: {', '.join(parts)}"] if parts else []) + note


def _format_supervisor(report: dict[str, Any]) -> str:
    agent = report["agent"]
    now = dt.datetime.now(dt.UTC).timestamp()
    head = f"agent pid {agent['pid']} (updated {now - agent['updated']:.0f}s ago"
    head += ")" if agent.get("connected", True) else "; user manager unreachable)"
    rows = [("SERVICE", "SUPERVISOR", "LAST PROBE", "RESTARTS", "NOTE")]
    for s in report["services"]:
        v = s.get("supervisor") or {}
        probe = v.get("probe")
        last = f"{probe['outcome']} {probe['latency_ms']} ms" if probe else "-"
        note = ""
        if v.get("state") == "FATAL":
            note = f"FATAL: {v.get('fatal_reason')} (`sparc-agent restart {report['stack']} {s['service']}`)"
        elif v.get("backoff_until"):
            note = f"restart in {max(0.0, v['backoff_until'] - now):.1f}s: {v.get('reason', '')}"
        elif v.get("state") not in (None, "HEALTHY", "COMPLETED"):
            note = str(v.get("reason", ""))
        rows.append((s["service"], str(v.get("state", "?")), last, f"{v.get('restarts', 0)}", note))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows]
    return "\n".join([head, *lines])
