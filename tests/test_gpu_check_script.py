"""scripts/gpu-check.py runs end to end against a stand-in `pynvml` module (no GPU here): timings, the
GPU line, and a listed process mapped through its real /proc/PID/cgroup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sparc_agent.host.gpu import read_cgroup, unit_of_cgroup

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent

STAND_IN = """
from types import SimpleNamespace as NS
class NVMLError(Exception):
    pass
def nvmlInit(): pass
def nvmlShutdown(): pass
def nvmlSystemGetDriverVersion(): return "550.00-standin"
def nvmlDeviceGetCount(): return 1
def nvmlDeviceGetHandleByIndex(i): return i
def nvmlDeviceGetName(h): return "NVIDIA H200"
def nvmlDeviceGetMemoryInfo(h): return NS(total=143771 << 20, used=4096 << 20)
def nvmlDeviceGetComputeRunningProcesses(h): return [NS(pid={pid}, usedGpuMemory=3590 << 20)]
def nvmlDeviceGetGraphicsRunningProcesses(h): raise NVMLError("Not Supported")
"""


def test_gpu_check_lists_a_process_with_its_unit(tmp_path: Path) -> None:
    (tmp_path / "pynvml.py").write_text(textwrap.dedent(STAND_IN.format(pid=os.getpid())))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu-check.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "GPU 0: NVIDIA H200: 143771 MiB total, 4096 MiB used" in proc.stdout
    assert "one query of every GPU's processes: median" in proc.stdout
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    text = read_cgroup(os.getpid())
    assert summary["processes"] == [
        {
            "pid": os.getpid(),
            "gpu": 0,
            "used_bytes": 3590 << 20,
            "unit": unit_of_cgroup(text) if text else None,
            "cgroup": text.strip().splitlines()[-1] if text else "unreadable",
        }
    ]
