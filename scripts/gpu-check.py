#!/usr/bin/env python3
"""gpu-check.py — what sparc-agent's GPU memory accounting sees on this machine, in well under a minute.

Prints NVML's init time and the time of one per-process query, each GPU (name, total, used), and each
process holding GPU memory with its memory and the systemd unit its /proc/PID/cgroup maps to (the way
`sparc-agent status` and the agent's metrics attribute memory to a service).

If torch or cupy is importable it first starts a GPU process of its own (a 1 GiB allocation), in a
transient unit `sparc-gpu-check-PID.scope` when `systemd-run --user` works, so the listing shows a
known process mapped to a known unit; otherwise it only lists what runs.

Needs only nvidia-ml-py and the sparc_agent package (run it from the checkout:
`python3 scripts/gpu-check.py`). Exit 0 done, 1 NVML unusable, 2 our own process did not show up.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's sparc_agent

from sparc_agent.host.gpu import MIB, read_cgroup, unit_of_cgroup

ALLOCATE = {
    "torch": "import sys, torch; x = torch.empty(1 << 28, dtype=torch.float32, device='cuda'); "
    "torch.cuda.synchronize(); print('ready', flush=True); sys.stdin.read()",
    "cupy": "import sys, cupy; x = cupy.empty(1 << 28, dtype=cupy.float32); "
    "cupy.cuda.Device().synchronize(); print('ready', flush=True); sys.stdin.read()",
}
WAIT_S = 20.0  # for our own process to appear in NVML's list after it allocated
READY_S = 25.0  # for the child to create its CUDA context and allocate


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def helper_library() -> str | None:
    for name in ("torch", "cupy"):
        probe = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return name
    return None


def start_own_process(library: str) -> tuple[subprocess.Popen[str] | None, str | None]:
    """A child allocating 1 GiB on GPU 0 and waiting; in a transient user scope when systemd-run allows
    it, else a plain child. None when neither got as far as "ready" within READY_S."""
    plain = [sys.executable, "-c", ALLOCATE[library]]
    scope = f"sparc-gpu-check-{os.getpid()}.scope"
    attempts: list[tuple[list[str], str | None]] = [(plain, None)]
    if shutil.which("systemd-run"):
        attempts.insert(
            0, (["systemd-run", "--user", "--scope", "--quiet", f"--unit={scope}", *plain], scope)
        )
    for argv, unit in attempts:
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        readable, _, _ = select.select([child.stdout], [], [], READY_S)
        if readable and child.stdout.readline().startswith("ready"):
            return child, unit
        print(f"  ({' '.join(argv[:3])} ...: no allocation within {READY_S:.0f} s, exit {child.poll()})")
        child.kill()
        child.wait(timeout=10)
    return None, None


def main() -> int:
    t0 = time.perf_counter()
    try:
        import pynvml
    except ImportError:
        print("nvidia-ml-py is not installed: pip install nvidia-ml-py")
        return 1
    t_import = time.perf_counter() - t0
    t1 = time.perf_counter()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        print(f"NVML init failed: {exc}")
        return 1
    t_init = time.perf_counter() - t1
    print(
        f"import pynvml {ms(t_import)}, nvmlInit {ms(t_init)}, driver {pynvml.nvmlSystemGetDriverVersion()}"
    )
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    for i, h in enumerate(handles):
        mem, name = pynvml.nvmlDeviceGetMemoryInfo(h), pynvml.nvmlDeviceGetName(h)
        print(f"GPU {i}: {name}: {mem.total // MIB} MiB total, {mem.used // MIB} MiB used")

    library = helper_library()
    child, scope = (None, None)
    if library is not None and handles:
        child, scope = start_own_process(library)
        if child is not None:
            where = f", unit {scope})" if scope else ")"
            print(f"started a {library} process holding 1 GiB (pid {child.pid}{where}")
    else:
        print("neither torch nor cupy importable: listing only what runs")

    def listing() -> list[tuple[int, int, int | None]]:
        out = {}
        for i, h in enumerate(handles):
            for query in (
                pynvml.nvmlDeviceGetComputeRunningProcesses,
                pynvml.nvmlDeviceGetGraphicsRunningProcesses,
            ):
                try:
                    for p in query(h):
                        used = p.usedGpuMemory
                        out[(p.pid, i)] = None if used is None or used >= 2**63 else int(used)
                except pynvml.NVMLError:
                    pass
        return [(pid, gpu, used) for (pid, gpu), used in out.items()]

    deadline = time.monotonic() + WAIT_S
    processes = listing()
    own_pids = set()
    if child is not None:
        own_pids = {child.pid, *_descendants(child.pid)}
        while not own_pids & {p for p, _, _ in processes} and time.monotonic() < deadline:
            time.sleep(0.2)
            own_pids = {child.pid, *_descendants(child.pid)}
            processes = listing()

    times = []
    for _ in range(50):
        t = time.perf_counter()
        listing()
        times.append(time.perf_counter() - t)
    print(
        f"one query of every GPU's processes: median {ms(statistics.median(times))}, max {ms(max(times))}"
        f" ({len(handles)} GPUs, 50 runs)"
    )

    rows = []
    for pid, gpu, used in sorted(processes):
        text = read_cgroup(pid)
        unit = unit_of_cgroup(text) if text else None
        cgroup = (text or "").strip().splitlines()[-1] if text else "unreadable"
        mark = "  <- ours" if pid in own_pids else ""
        size = f"{used // MIB} MiB" if used is not None else "n/a"
        print(f"  pid {pid:>8}  gpu {gpu}  {size:>10}  unit {unit or '-'}  cgroup {cgroup}{mark}")
        rows.append({"pid": pid, "gpu": gpu, "used_bytes": used, "unit": unit, "cgroup": cgroup})
    if not rows:
        print("  no process holds GPU memory")
    ok = child is None or bool(own_pids & {p for p, _, _ in processes})
    if child is not None:
        child.kill()
        child.wait(timeout=10)
        if not ok:
            print(f"our own process (pid {child.pid}) did not show up within {WAIT_S:.0f} s")
    pynvml.nvmlShutdown()
    summary = {
        "nvml_init_ms": round(t_init * 1000, 2),
        "query_median_ms": round(statistics.median(times) * 1000, 3),
        "gpus": len(handles),
        "processes": rows,
        "own_scope": scope,
        "total_s": round(time.perf_counter() - t0, 2),
    }
    print(json.dumps(summary))
    return 0 if ok else 2


def _descendants(pid: int) -> list[int]:
    """Children's PIDs (systemd-run --scope execs in place, but a wrapper may fork)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            out += [int(child), *_descendants(int(child))]
    return out


if __name__ == "__main__":
    sys.exit(main())
