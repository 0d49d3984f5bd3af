#!/usr/bin/env python3
"""What metrics cost the agent: RSS and CPU supervising the 5-service avatar stack, metrics off vs on.

Side by side in one run, interleaved (off, on, off, on, ...), medians of --runs: the same applied stack,
`sparc-agent run --no-apply`, idle for --idle seconds each. "on" means agent.yaml `metrics: {port}`, a
scrape of /metrics every second (Prometheus' fastest usual interval), and the GPU path exercised: the
GPU services' memory read through the fake NVML layer (SPARC_FAKE_NVML) at every scrape (--nvml real:
through pynvml and the driver's NVML instead).
Last line: `metrics: rss_off_mb=A rss_on_mb=B ratio=R cpu_off_pct=C cpu_on_pct=D scrape_ms=S`.
Needs root and scripts/test-host-setup.sh --images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests"))
sys.path.insert(0, str(ROOT))

import support.testhost as testhost  # noqa: E402 - the test host helpers, shared with the e2e tests
from recovery import agent, all_healthy, idle_usage  # noqa: E402
from support.stackfiles import avatar_profile, sparc, write_profile  # noqa: E402


def scraper(port: int, stop: threading.Event, times: list[float]) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                answer.read()
            times.append(time.perf_counter() - t)
        except OSError:
            pass
        stop.wait(1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--idle", type=float, default=20.0, help="seconds of measurement per run")
    ap.add_argument(
        "--nvml",
        choices=["fake", "real"],
        default="fake",
        help="real: NVML itself (pynvml imported; on a machine without a GPU its init fails once)",
    )
    args = ap.parse_args()
    testhost.require_testhost = lambda: None  # type: ignore[assignment]  # no pytest here
    testhost.build_standin_images()
    rss: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    scrapes: list[float] = []
    with (
        testhost.journald_running(),
        tempfile.TemporaryDirectory() as tmp,
        testhost.standalone_manager() as mgr,
    ):
        doc = avatar_profile(mgr, Path(tmp))
        done = sparc(mgr, "apply", str(write_profile(doc, Path(tmp) / "p.yaml")))
        if done.returncode != 0:
            print(done.stdout, done.stderr, file=sys.stderr)
            return 1
        fake = Path(tmp) / "nvml.json"
        cgroup = "0::/x/{unit}/libpod-payload-ab"
        fake.write_text(
            json.dumps(
                {
                    "gpus": [{"name": "NVIDIA L4", "total_mib": 23034}],
                    "processes": [
                        {
                            "pid": 1,
                            "used_mib": 3590,
                            "cgroup": cgroup.format(unit=f"{mgr.name}-riva.service"),
                        },
                        {
                            "pid": 2,
                            "used_mib": 3000,
                            "cgroup": cgroup.format(unit=f"{mgr.name}-unity.service"),
                        },
                    ],
                }
            )
        )
        if args.nvml == "fake":
            mgr.env["SPARC_FAKE_NVML"] = str(fake)
        config = mgr.config_dir / "sparc-agent" / "agent.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        for i in range(args.runs):
            for mode in ("off", "on"):
                port = testhost.free_port()
                if mode == "on":
                    config.write_text(f"metrics: {{port: {port}}}\n")
                else:
                    config.unlink(missing_ok=True)
                with agent(mgr) as proc:
                    all_healthy(mgr)
                    stop = threading.Event()
                    thread = threading.Thread(target=scraper, args=(port, stop, scrapes), daemon=True)
                    if mode == "on":
                        thread.start()
                    time.sleep(2)
                    r, c = idle_usage(proc.pid, args.idle)
                    stop.set()
                    rss[mode].append(r)
                    cpu[mode].append(c)
                print(f"run {i + 1} metrics {mode}: RSS {r:.1f} MB, CPU {c:.2f} %", flush=True)
    off, on = statistics.median(rss["off"]), statistics.median(rss["on"])
    coff, con = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    scrape_ms = statistics.median(scrapes) * 1000 if scrapes else float("nan")
    print(f"agent RSS, 5 services: metrics off {off:.1f} MB, on {on:.1f} MB (x{on / off:.2f}; goal <= 50 MB)")
    print(f"agent CPU: off {coff:.2f} %, on {con:.2f} % of a core; one scrape {scrape_ms:.1f} ms (median)")
    print(
        f"metrics: rss_off_mb={off:.1f} rss_on_mb={on:.1f} ratio={on / off:.2f} "
        f"cpu_off_pct={coff:.2f} cpu_on_pct={con:.2f} scrape_ms={scrape_ms:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
