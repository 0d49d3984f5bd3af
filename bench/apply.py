#!/usr/bin/env python3
"""Apply benchmark, on the real test host (a private systemd user manager, podman, stand-in images).

Measured side by side, interleaved, in one run:
  (a) fresh `sparc-agent apply` of the 5-service avatar stack until it exits healthy (a new process:
      interpreter start-up, validation, render, writes, D-Bus, ordered health-gated start), against
      the baseline a person types today: a shell loop of `podman pod create` + `podman run -d` per
      service, then waiting until the same probes answer;
  (b) a no-op re-apply: wall time, and restarts (MainPID changes + NRestarts) it caused.
Medians of --runs. Last line: `apply: fresh_ratio=R noop_ms=M noop_restarts=N`.
Needs root and scripts/test-host-setup.sh --images.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import testhost  # noqa: E402 - the test host helpers, shared with the e2e tests
from stackfiles import SPARC_AGENT, avatar_profile, unit_props, write_profile  # noqa: E402

from sparc_agent.probes.health import probe_once  # noqa: E402
from sparc_agent.profile.load import load_profile  # noqa: E402

SERVICES = ["riva", "mas", "signaling", "turn", "unity"]


def all_healthy(profile_path: Path, container_prefix: str, timeout: float = 120) -> float:
    """Seconds until every service's probe passes (the same probes for both sides)."""
    profile = load_profile(str(profile_path)).profile
    start = time.monotonic()

    async def wait() -> None:
        pending = {n: s.health for n, s in profile.services.items() if s.health}
        while pending:
            for name, health in list(pending.items()):
                if (await probe_once(health, f"{container_prefix}-{name}")).ok:
                    del pending[name]
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"never healthy: {sorted(pending)}")
            await asyncio.sleep(0.05)

    asyncio.run(wait())
    return time.monotonic() - start


def shell_loop(doc: dict[str, Any], name: str) -> str:
    """What people run by hand today: create the pod, `podman run -d` every service."""
    ports = " ".join(f"-p 127.0.0.1:{p}" for p in doc["pod"]["ports"])
    lines = [f"podman pod create --name {name} {ports} >/dev/null"]
    for svc_name, svc in doc["services"].items():
        args = ["podman", "run", "-d", "--init", "--pod", name, "--name", f"{name}-{svc_name}"]
        for key, value in svc.get("env", {}).items():
            args += ["-e", f"{key}={value}"]
        if svc.get("secrets"):
            args += ["-e", "OPENAI_API_KEY=sk-test-not-a-real-key"]
        if svc.get("gpus"):
            args += ["--device", "nvidia.com/gpu=all"]
        for volume in svc.get("volumes", []):
            args += ["-v", f"{name}-{volume}"]  # "riva-models:/data" -> a named volume of this run
        args += [svc["image"], *svc.get("command", [])]
        lines.append(shlex.join(args) + " >/dev/null")
    return "set -e\n" + "\n".join(lines) + "\n"


def run_baseline(tmp: Path) -> float:
    # a manager only for a unique name and free ports: the loop itself does not use systemd
    with testhost.standalone_manager() as mgr:
        doc = avatar_profile(mgr, tmp)
        profile = write_profile(doc, tmp / "baseline.yaml")
        name = f"{mgr.name}-base"
        start = time.monotonic()
        try:
            subprocess.run(["bash", "-c", shell_loop(doc, name)], check=True, timeout=120)
            all_healthy(profile, name)
            return time.monotonic() - start
        finally:
            subprocess.run(["podman", "pod", "rm", "-f", "-t", "0", name], capture_output=True, check=False)
            subprocess.run(
                ["podman", "volume", "rm", "-f", f"{name}-riva-models"], capture_output=True, check=False
            )


def apply_cli(mgr: testhost.UserManager, profile: Path) -> float:
    start = time.monotonic()
    done = subprocess.run(
        [*SPARC_AGENT, "apply", str(profile)], env=mgr.environ(), capture_output=True, text=True, timeout=300
    )
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(done.stdout + done.stderr)
    return elapsed


def run_ours(tmp: Path, noop_runs: int) -> tuple[float, list[float], int]:
    with testhost.standalone_manager() as mgr:
        profile = write_profile(avatar_profile(mgr, tmp), tmp / "ours.yaml")
        fresh = apply_cli(mgr, profile)
        units = [f"{mgr.name}-{s}.service" for s in SERVICES]
        before = {u: unit_props(mgr, u) for u in units}
        noops = [apply_cli(mgr, profile) for _ in range(noop_runs)]
        after = {u: unit_props(mgr, u) for u in units}
        restarts = sum(
            (before[u]["MainPID"] != after[u]["MainPID"])
            + int(after[u]["NRestarts"])
            - int(before[u]["NRestarts"])
            for u in units
        )
        return fresh, noops, restarts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--noop-runs", type=int, default=5)
    args = parser.parse_args()
    testhost.build_standin_images()
    base, fresh, noops, restarts = [], [], [], 0
    with testhost.journald_running(), tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):  # interleaved, so drift on the machine hits both sides alike
            base.append(run_baseline(Path(tmp)))
            f, n, r = run_ours(Path(tmp), args.noop_runs)
            fresh.append(f)
            noops += n
            restarts += r
            print(
                f"run {i + 1}: podman-run loop {base[-1]:.2f} s, sparc-agent apply {f:.2f} s, "
                f"no-op {statistics.median(n) * 1000:.0f} ms"
            )
    b, f, n = statistics.median(base), statistics.median(fresh), statistics.median(noops)
    print(
        f"fresh to all-healthy: sparc-agent apply {f:.2f} s vs podman run loop {b:.2f} s (ratio {f / b:.2f})"
    )
    print(f"no-op re-apply: median {n * 1000:.0f} ms over {len(noops)} runs, {restarts} restarts")
    print(f"apply: fresh_ratio={f / b:.2f} noop_ms={n * 1000:.0f} noop_restarts={restarts}")


if __name__ == "__main__":
    main()
