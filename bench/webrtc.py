#!/usr/bin/env python3
"""The webrtc probe, measured on the real media path (tests/support/medianet.py: coturn, the URS signaling
and aiortc renderer stand-ins in one network namespace, the probe in another).

Prints, as medians of --runs interleaved runs:
  healthy   first-frame time and each phase's, the probe's wall time and its session's CPU
            (the child's rusage), per signaling mode and answer flow
  faults    how long each fault takes to be reported, and at which phase
  memory    peak RSS (VmHWM) of a process running the agent's probe path (sparc_agent.agent.runner
            imported, run_probe in a loop) with a webrtc probe, beside the same with a tcp probe:
            aiortc and PyAV stay in the short-lived session, so the two should match

Needs root, coturn, nftables and aiortc; run it under the e2e lock:
  flock /tmp/sparc-e2e.lock .venv/bin/python bench/webrtc.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.medianet import SIGNALING_PORT, TURN_PORT, MediaNet, media_net  # noqa: E402

ONE = """
import asyncio, json, resource, sys, time
from sparc_agent.probes import run_probe
from sparc_agent.probes.webrtc import WebRtcSpec
spec = WebRtcSpec(port={sig}, signaling=sys.argv[3], turn_port={turn}, turn_secret="t", host=sys.argv[1],
                  timeout=15.0, frame_timeout=3.0)
before = resource.getrusage(resource.RUSAGE_CHILDREN)
r = asyncio.run(run_probe(spec, secrets={{"t": {{"file": sys.argv[2]}}}}))
after = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
out = {{"ok": r.ok, "phase": r.phase, "timings": dict(r.timings), "wall": r.latency_s, "cpu": cpu}}
print(json.dumps(out))
"""

MEMORY = """
import asyncio, sys
import sparc_agent.agent.runner  # the agent's own modules, as `sparc-agent run` has them
from sparc_agent.probes import run_probe
from sparc_agent.probes.tcp import TcpSpec
from sparc_agent.probes.webrtc import WebRtcSpec
kind, host, secret, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if kind == "webrtc":
    spec = WebRtcSpec(port={sig}, turn_port={turn}, turn_secret="t", host=host, timeout=15.0)
else:
    spec = TcpSpec(port={sig}, timeout_s=2.0)
for _ in range(runs):
    r = asyncio.run(run_probe(spec, host=host, secrets={{"t": {{"file": secret}}}}))
    assert r.ok, r
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(int(hwm) / 1024)
"""


def run_one(net: MediaNet, secret: Path, mode: str) -> dict[str, object]:
    code = ONE.format(sig=SIGNALING_PORT, turn=TURN_PORT)
    done = net.client_run([sys.executable, "-c", code, net.server_ip, str(secret), mode])
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result: dict[str, object] = json.loads(done.stdout)
    return result


def setup(net: MediaNet, mode: str, flow: str | None) -> None:
    for name in ("renderer", "signaling"):
        net.stop(name)
    net.signaling(mode)
    if flow is not None:
        net.renderer(flow, mode)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d, media_net(Path(d)) as net:
        secret = net.tmp / "turn.secret"
        secret.write_text(net.secret + "\n")
        secret.chmod(0o600)
        wrong = net.tmp / "wrong.secret"
        wrong.write_text("not-the-secret\n")
        net.turn()
        print("healthy (median of interleaved runs):")
        cases = [("websocket", "answer"), ("websocket", "re-offer"), ("http", "answer"), ("http", "re-offer")]
        runs: dict[tuple[str, str], list[dict[str, object]]] = {c: [] for c in cases}
        for _ in range(args.runs):
            for mode, flow in cases:
                setup(net, mode, flow)
                runs[(mode, flow)].append(run_one(net, secret, mode))
        for (mode, flow), got in runs.items():
            assert all(r["ok"] for r in got), got
            phases = {p: med([r["timings"][p] for r in got]) for p in got[0]["timings"]}  # type: ignore[index]
            steps = " ".join(f"{p}={s:.3f}" for p, s in phases.items())
            wall = med([float(r["wall"]) for r in got])  # type: ignore[arg-type]
            cpu = med([float(r["cpu"]) for r in got])  # type: ignore[arg-type]
            print(
                f"  {mode:<9} {flow:<8} first_frame={phases['first_frame']:.3f}s"
                f" wall={wall:.3f}s cpu={cpu:.3f}s"
            )
            print(f"    [{steps}]")
        print("faults (time until reported, phase):")
        faults = {
            "wrong-secret": lambda: (setup(net, "websocket", "answer"), wrong),
            "relay-dropped": lambda: (setup(net, "websocket", "answer"), net.drop_relay_ports(), secret),
            "no-frames": lambda: (setup(net, "websocket", "no-frames"), secret),
            "no-renderer": lambda: (setup(net, "websocket", None), secret),
        }
        for name, make in faults.items():
            times, phases_seen = [], set()
            for _ in range(args.runs):
                key = make()[-1]
                r = run_one(net, key, "websocket")
                net.allow_relay_ports()
                times.append(float(r["wall"]))  # type: ignore[arg-type]
                phases_seen.add(str(r["phase"]))
            print(f"  {name:<13} detected in {med(times):.2f}s at {'/'.join(sorted(phases_seen))}")
        print("memory (peak RSS of the agent's probe path, 5 probe runs each):")
        setup(net, "websocket", "answer")
        code = MEMORY.format(sig=SIGNALING_PORT, turn=TURN_PORT)
        peaks = {}
        for kind in ("tcp", "webrtc"):
            done = net.client_run(
                [sys.executable, "-c", code, kind, net.server_ip, str(secret), "5"], timeout=300
            )
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-2000:])
            peaks[kind] = float(done.stdout.strip().splitlines()[-1])
        print(
            f"  tcp probe {peaks['tcp']:.1f} MB, webrtc probe {peaks['webrtc']:.1f} MB"
            f" (ratio {peaks['webrtc'] / peaks['tcp']:.2f})"
        )
    print(f"done at {time.strftime('%H:%M:%S')}")


if __name__ == "__main__":
    main()
