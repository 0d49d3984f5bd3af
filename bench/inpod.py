#!/usr/bin/env python3
"""What a probe of a service inside the pod costs, by route, side by side on the real test host.

One pod (rootful podman, stand-in MAS on :8000 inside it, also published on 127.0.0.1 for the host
route), and the same HTTP GET /health probe four ways, interleaved round by round:

  host      the probe from the host through a published port (what publishing buys; no process)
  prober    through the long-lived in-pod prober, one line of JSON each way (what sparc-agent does)
  nsenter   a new prober per probe: `nsenter -t INFRA -n python -m sparc_agent.probes.inpod`, one request
  exec      `podman exec MAS python3 -c <GET /health>` per probe (the infra container has no tools)

Per route: median wall time per probe and median CPU per probe (ours + children + the prober's own),
then ratios to `prober`. Also the prober's RSS and its CPU over --idle seconds of no probes.
Last line: `inpod: prober_ms=.. nsenter_ms=.. exec_ms=.. host_ms=.. prober_cpu_ms=.. nsenter_cpu_ms=..
exec_cpu_ms=.. prober_rss_mb=.. prober_idle_cpu_pct=..`. Needs root and the stand-in images.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import support.testhost as testhost  # noqa: E402 - the test host helpers, shared with the e2e tests

from sparc_agent.host.netns import enter_argv  # noqa: E402
from sparc_agent.probes import run_probe  # noqa: E402
from sparc_agent.probes.http import HttpSpec  # noqa: E402
from sparc_agent.probes.inpod import PodProber, encode_probe  # noqa: E402

GET = (
    "import urllib.request,sys;"
    "sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health',timeout=2).status==200 else 1)"
)


def cpu_of(pid: int) -> float:
    """utime + stime of a live process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def our_cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


async def one_shot_nsenter(infra: int, spec: HttpSpec) -> bool:
    import json

    argv = enter_argv(infra, [sys.executable, "-P", "-m", "sparc_agent.probes.inpod", str(infra)])
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({"id": 1, "probe": encode_probe(spec)}).encode() + b"\n")
    await proc.stdout.readline()  # ready
    answer = await proc.stdout.readline()
    proc.stdin.close()  # EOF: it exits
    await proc.wait()
    return b'"outcome": "ok"' in answer


async def podman_exec(container: str) -> bool:
    proc = await asyncio.create_subprocess_exec(
        "podman", "exec", container, "python3", "-c", GET, stdout=asyncio.subprocess.DEVNULL
    )
    return await proc.wait() == 0


async def bench(
    pod: str, container: str, infra: int, host_port: int, runs: int, idle: float
) -> dict[str, float]:
    inside = HttpSpec(port=8000, path="/health", timeout_s=5)
    published = HttpSpec(port=host_port, path="/health", timeout_s=5)
    prober = PodProber(pod)
    assert (await prober.probe(inside)).ok  # started outside the measurement: once per pod

    async def via_host() -> bool:
        return (await run_probe(published)).ok

    async def via_prober() -> bool:
        return (await prober.probe(inside)).ok

    routes: dict[str, Callable[[], Awaitable[bool]]] = {
        "host": via_host,
        "prober": via_prober,
        "nsenter": lambda: one_shot_nsenter(infra, inside),
        "exec": lambda: podman_exec(container),
    }
    wall: dict[str, list[float]] = {r: [] for r in routes}
    cpu: dict[str, list[float]] = {r: [] for r in routes}
    for _ in range(runs):
        for route, probe in routes.items():
            pid = prober.pid
            assert pid is not None
            c0, p0, t0 = our_cpu(), cpu_of(pid), time.perf_counter()
            ok = await probe()
            t1, c1, p1 = time.perf_counter(), our_cpu(), cpu_of(pid)
            assert ok, route
            wall[route].append(t1 - t0)
            cpu[route].append((c1 - c0) + (p1 - p0 if route == "prober" else 0.0))
    pid = prober.pid
    assert pid is not None
    rss = rss_mb(pid)
    p0, t0 = cpu_of(pid), time.monotonic()
    await asyncio.sleep(idle)
    idle_pct = 100 * (cpu_of(pid) - p0) / (time.monotonic() - t0)
    await prober.close()

    out: dict[str, float] = {}
    print(f"{'route':<8} {'wall ms':>9} {'cpu ms':>8} {'wall/prober':>12} {'cpu/prober':>11}")
    base_w, base_c = statistics.median(wall["prober"]), max(statistics.median(cpu["prober"]), 1e-6)
    for route in routes:
        w, c = statistics.median(wall[route]), statistics.median(cpu[route])
        print(f"{route:<8} {w * 1000:9.2f} {c * 1000:8.2f} {w / base_w:12.1f} {c / base_c:11.1f}")
        out[f"{route}_ms"], out[f"{route}_cpu_ms"] = w * 1000, c * 1000
    print(f"prober: RSS {rss:.1f} MB, idle CPU {idle_pct:.2f} % over {idle:g} s (CPU resolution 10 ms)")
    out["prober_rss_mb"], out["prober_idle_cpu_pct"] = rss, idle_pct
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--idle", type=float, default=10.0)
    args = parser.parse_args()
    testhost.require_testhost()
    testhost.build_standin_images()
    pod = f"bench-inpod-{os.getpid()}"
    port = testhost.free_port()
    try:
        testhost.podman("pod", "create", "--name", pod, "-p", f"127.0.0.1:{port}:8000")
        testhost.podman(
            "run",
            "-d",
            "--pod",
            pod,
            "--name",
            f"{pod}-mas",
            "-e",
            "RIVA_API_URL=localhost:8000",
            testhost.STANDIN_IMAGES["mas"],
        )
        testhost.wait_tcp(port, 30)
        infra_id = testhost.podman("pod", "inspect", "--format", "{{.InfraContainerID}}", pod).stdout.strip()
        infra = int(testhost.podman("inspect", "--format", "{{.State.Pid}}", infra_id).stdout.strip())
        got = asyncio.run(bench(pod, f"{pod}-mas", infra, port, args.runs, args.idle))
    finally:
        subprocess.run(["podman", "pod", "rm", "-f", "-t", "0", pod], capture_output=True, check=False)
    print("inpod: " + " ".join(f"{k}={v:.2f}" for k, v in got.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
