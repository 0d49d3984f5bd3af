#!/usr/bin/env python3
"""Recovery benchmark on the real test host: how fast does a frozen or crashed service answer again?

One run, side by side:
  ours      `sparc-agent run` supervising the avatar stack with the example profile's timing for the
            frozen service (signaling: websocket probe, interval 2s, timeout 1s, retries 2; restart
            defaults: backoff 1s). Measured: `podman pause` of signaling -> its probe answers from a new
            container (hung_s); `kill -9` of turn's container process -> STUN answers again (crash_s).
  podman    HealthOnFailure=restart with podman's defaults (interval 30s, timeout 30s, retries 3),
            computed from those documented defaults, not measured: rootful podman runs health timers only
            through /run/systemd/private, a machine-wide symlink that would hijack other users' tests.
            A check starts `interval` after the previous one ended (systemd timer OnUnitInactiveSec).
  kubelet   liveness probe defaults (periodSeconds 10, timeoutSeconds 1, failureThreshold 3,
            terminationGracePeriodSeconds 30: a frozen process ignores SIGTERM), computed.
  idle      the agent's RSS and CPU over --idle seconds supervising 4 services with the example's
            timing (goal <= 50 MB, <= 1 % of a core).
Medians of --runs. Last line:
  `recovery: hung_s=H crash_s=C podman_hung_s=P kubelet_hung_s=K rss_mb=R cpu_pct=U`.
Needs root and scripts/test-host-setup.sh --images.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import testhost  # noqa: E402 - the test host helpers, shared with the e2e tests
from stackfiles import SPARC_AGENT, avatar_profile, sparc, unit_props, write_profile  # noqa: E402

WINDOW_S = 12


@contextmanager
def agent(mgr: testhost.UserManager) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [*SPARC_AGENT, "run", "--no-apply", "--log-format", "json"],
        env=mgr.environ(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(mgr.root / "agent.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def states(mgr: testhost.UserManager) -> dict[str, str]:
    try:
        data = json.loads((mgr.state_dir / "sparc-agent" / mgr.name / "agent-state.json").read_text())
        return {n: s["state"] for n, s in data["services"].items()}
    except (OSError, ValueError, KeyError):
        return {}


def all_healthy(mgr: testhost.UserManager, timeout: float = 60) -> None:
    testhost.wait_for(
        lambda: (s := states(mgr)) and all(v == "HEALTHY" for v in s.values()), timeout, what="all HEALTHY"
    )


def recovered(mgr: testhost.UserManager, unit: str, old_pid: str, probe: Callable[[], bool]) -> bool:
    return unit_props(mgr, unit)["MainPID"] not in ("0", old_pid) and probe()


def ws_ok(port: int) -> bool:
    try:
        return testhost.ws_handshake(port, timeout=0.5) == (101, True)
    except OSError:
        return False


def stun_ok(port: int) -> bool:
    try:
        testhost.stun_binding(port, timeout=0.3)
        return True
    except (OSError, RuntimeError):
        return False


def measure(
    mgr: testhost.UserManager, service: str, act: Callable[[], None], probe: Callable[[], bool]
) -> float:
    unit = f"{mgr.name}-{service}.service"
    old = unit_props(mgr, unit)["MainPID"]
    t0 = time.monotonic()
    act()
    testhost.wait_for(lambda: recovered(mgr, unit, old, probe), 120, interval=0.02, what=f"{service} back")
    return time.monotonic() - t0


def freeze(mgr: testhost.UserManager) -> None:
    testhost.podman("pause", f"{mgr.name}-signaling")


def crash(mgr: testhost.UserManager) -> None:
    pid = testhost.podman("inspect", "-f", "{{.State.Pid}}", f"{mgr.name}-turn").stdout.strip()
    os.kill(int(pid), signal.SIGKILL)


def idle_usage(pid: int, seconds: float) -> tuple[float, float]:
    """(peak RSS MB, CPU % of one core) of `pid` over `seconds`."""
    tick = os.sysconf("SC_CLK_TCK")

    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    def rss() -> float:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    c0, t0, peak = cpu(), time.monotonic(), rss()
    while time.monotonic() - t0 < seconds:
        time.sleep(1)
        peak = max(peak, rss())
    return peak, 100 * (cpu() - c0) / (time.monotonic() - t0)


# ---------------------------------------------------------------- computed baselines


def podman_hung(restart_s: float) -> float:
    interval, timeout, retries, stop_timeout = 30.0, 30.0, 3, 10.0
    # first check after the freeze starts on average interval/2 later; each hangs `timeout`; the next
    # starts `interval` after the previous ended; restart = stop (SIGTERM ignored: stop_timeout) + start
    return interval / 2 + retries * timeout + (retries - 1) * interval + stop_timeout + restart_s


def kubelet_hung(restart_s: float) -> float:
    period, timeout, threshold, grace = 10.0, 1.0, 3, 30.0
    # probes start every period (a ticker); the failing ones end at +timeout; then SIGTERM, grace, SIGKILL
    return period / 2 + (threshold - 1) * period + timeout + grace + restart_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement")
    args = ap.parse_args()
    testhost.require_testhost = lambda: None  # type: ignore[assignment]  # no pytest here
    testhost.build_standin_images()
    hung, crashed = [], []
    with testhost.journald_running(), tempfile.TemporaryDirectory() as tmp:
        with testhost.standalone_manager() as mgr:
            # the example's signaling timing (examples/sparc-avatar.yaml) and restart defaults
            doc = avatar_profile(mgr, Path(tmp))
            sig_port = int(doc["pod"]["ports"][1].split(":")[0])
            turn_port = int(doc["pod"]["ports"][3].split(":")[0].split("/")[0])
            signaling: dict[str, Any] = doc["services"]["signaling"]
            signaling["health"] = {
                "websocket": {"port": sig_port},
                "interval": "2s",
                "timeout": "1s",
                "retries": 2,
            }
            # a short window so that each run is a first failure (the count resets after a healthy window)
            signaling["restart"] = {"window": f"{WINDOW_S}s"}
            doc["services"]["turn"]["restart"] = {"window": f"{WINDOW_S}s"}
            done = sparc(mgr, "apply", str(write_profile(doc, Path(tmp) / "p.yaml")))
            if done.returncode != 0:
                print(done.stdout, done.stderr, file=sys.stderr)
                return 1
            with agent(mgr):
                for i in range(args.runs):
                    all_healthy(mgr)
                    time.sleep(3)  # a random probe phase, as in real life
                    hung.append(measure(mgr, "signaling", lambda: freeze(mgr), lambda: ws_ok(sig_port)))
                    all_healthy(mgr)
                    time.sleep(3)
                    crashed.append(measure(mgr, "turn", lambda: crash(mgr), lambda: stun_ok(turn_port)))
                    print(f"run {i + 1}: hung {hung[-1]:.2f} s, crash {crashed[-1]:.2f} s", flush=True)
                    time.sleep(WINDOW_S + 1)  # healthy for a window: the next run is a first failure again
        with testhost.standalone_manager() as mgr:
            doc = avatar_profile(mgr, Path(tmp))
            del doc["services"]["unity"]
            # the example's timing: signaling every 2 s, the others at the default 5 s
            for name, svc in doc["services"].items():
                svc["health"]["interval"] = "2s" if name == "signaling" else "5s"
            done = sparc(mgr, "apply", str(write_profile(doc, Path(tmp) / "q.yaml")))
            if done.returncode != 0:
                print(done.stdout, done.stderr, file=sys.stderr)
                return 1
            with agent(mgr) as proc:
                all_healthy(mgr)
                time.sleep(2)
                rss, cpu = idle_usage(proc.pid, args.idle)
    h, c = statistics.median(hung), statistics.median(crashed)
    p, k = podman_hung(1.0), kubelet_hung(1.0)
    print()
    print(f"{'time from freeze to healthy again':<44} {'seconds':>8}")
    print(f"{'  sparc-agent (example timing, measured)':<44} {h:>8.2f}   goal <= 5 s")
    print(f"{'  podman HealthOnFailure=restart (computed)':<44} {p:>8.1f}   x{p / h:.0f} of ours")
    print(f"{'  kubelet liveness defaults (computed)':<44} {k:>8.1f}   x{k / h:.0f} of ours")
    print(f"{'crash (kill -9) to healthy again, measured':<44} {c:>8.2f}")
    print(
        f"agent idle, 4 services, {args.idle:.0f} s: RSS {rss:.1f} MB (goal <= 50),"
        f" CPU {cpu:.2f} % (goal <= 1)"
    )
    print(
        f"recovery: hung_s={h:.2f} crash_s={c:.2f} podman_hung_s={p:.1f} kubelet_hung_s={k:.1f} "
        f"rss_mb={rss:.1f} cpu_pct={cpu:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
