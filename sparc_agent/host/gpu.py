"""The GPUs, through NVML (nvidia-ml-py): each device's memory, and how much of it each service uses.

NVML lists the processes that hold GPU memory (compute: CUDA, e.g. Riva or an LLM; graphics: Vulkan or
OpenGL, e.g. the Unity renderer) with host PIDs. `/proc/PID/cgroup` names the systemd unit a PID runs
in, and so the service (`STACK-SERVICE.service`; a container's processes sit in a `libpod-*` cgroup
below its unit). Measured on an H200 VM: init ~70 ms, a query ~0.5 ms.

Only this module imports pynvml, and only when asked: the agent loads it when a stack has a GPU
service and metrics or status ask. `SPARC_FAKE_NVML=FILE.json` replaces NVML with the devices and
processes in that file (tests, and trying the GPU checks on a machine without a GPU):

    {"gpus": [{"name": "NVIDIA L4", "total_mib": 23034, "used_mib": 100}],
     "processes": [{"pid": 4242, "gpu": 0, "used_mib": 3590, "cgroup": "0::/.../x-riva.service"}]}

`cgroup` (optional) stands in for /proc/PID/cgroup, so a test can name the unit without a real PID.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

MIB = 1024 * 1024
FAKE_ENV = "SPARC_FAKE_NVML"


class GpuUnavailable(Exception):
    """No NVML here (no driver, no nvidia-ml-py, no GPU): the reason, for a person."""


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total: int  # bytes
    used: int  # bytes, every process together


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    gpu: int
    used: int | None  # bytes; None when NVML cannot say (no permission, some virtualised GPUs)
    cgroup: str | None = None  # stands in for /proc/PID/cgroup (the fake layer)


class Nvml(Protocol):
    def gpus(self) -> list[Gpu]: ...

    def processes(self) -> list[GpuProcess]: ...

    def close(self) -> None: ...


class PyNvml:
    """The real NVML, initialised once (nvmlInit costs ~70 ms; each query after it ~0.5 ms)."""

    def __init__(self) -> None:
        try:
            import pynvml  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            raise GpuUnavailable(
                "nvidia-ml-py is missing (a dependency of sparc-agent: reinstall it)"
            ) from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise GpuUnavailable(f"NVML: {exc} (no NVIDIA driver or GPU here?)") from None
        self._nvml: Any = pynvml

    def _handles(self) -> list[Any]:
        n = self._nvml
        return [n.nvmlDeviceGetHandleByIndex(i) for i in range(n.nvmlDeviceGetCount())]

    def gpus(self) -> list[Gpu]:
        n = self._nvml
        out = []
        for i, handle in enumerate(self._handles()):
            name = n.nvmlDeviceGetName(handle)
            memory = n.nvmlDeviceGetMemoryInfo(handle)
            out.append(
                Gpu(i, name.decode() if isinstance(name, bytes) else str(name), memory.total, memory.used)
            )
        return out

    def processes(self) -> list[GpuProcess]:
        n = self._nvml
        out: dict[tuple[int, int], GpuProcess] = {}
        for i, handle in enumerate(self._handles()):
            for query in (n.nvmlDeviceGetComputeRunningProcesses, n.nvmlDeviceGetGraphicsRunningProcesses):
                try:
                    found = query(handle)
                except n.NVMLError:
                    continue  # e.g. NOT_SUPPORTED for graphics on a compute-only GPU
                for p in found:
                    used = p.usedGpuMemory
                    # NVML_VALUE_NOT_AVAILABLE is (unsigned long long)-1; old bindings give None
                    value = None if used is None or used >= 2**63 else int(used)
                    # a process with both contexts is listed twice with the same memory: count it once
                    out[(int(p.pid), i)] = GpuProcess(int(p.pid), i, value)
        return list(out.values())

    def close(self) -> None:
        self._nvml.nvmlShutdown()


class FakeNvml:
    """Devices and processes from a JSON file (see the module docstring); re-read on every query."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._load()  # a broken file is an error now, not at the first scrape

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise GpuUnavailable(f"{FAKE_ENV}={self.path}: {exc}") from None
        if not isinstance(data, dict):
            raise GpuUnavailable(f"{FAKE_ENV}={self.path}: not a JSON object")
        return data

    def gpus(self) -> list[Gpu]:
        return [
            Gpu(i, str(g["name"]), int(g["total_mib"]) * MIB, int(g.get("used_mib", 0)) * MIB)
            for i, g in enumerate(self._load().get("gpus", []))
        ]

    def processes(self) -> list[GpuProcess]:
        return [
            GpuProcess(
                int(p["pid"]),
                int(p.get("gpu", 0)),
                None if p.get("used_mib") is None else int(p["used_mib"]) * MIB,
                p.get("cgroup"),
            )
            for p in self._load().get("processes", [])
        ]

    def close(self) -> None:
        pass


def open_nvml(env: dict[str, str] | None = None) -> Nvml:
    """NVML (or the fake named by SPARC_FAKE_NVML); raises GpuUnavailable with the reason."""
    fake = (env if env is not None else os.environ).get(FAKE_ENV)
    if fake:
        return FakeNvml(Path(fake))
    return PyNvml()


# ---------------------------------------------------------------- PID -> cgroup -> unit

_LIBPOD = re.compile(r"libpod-(payload-|conmon-)?[0-9a-f]+(\.scope)?")
_MANAGER = re.compile(r"user@\d+\.service")


def read_cgroup(pid: int, proc: Path = Path("/proc")) -> str | None:
    try:
        return (proc / str(pid) / "cgroup").read_text()
    except OSError:
        return None  # gone meanwhile, or another user's process under hidepid


def unit_of_cgroup(text: str) -> str | None:
    """The systemd unit a /proc/PID/cgroup names: the innermost `*.service` or `*.scope` of the unified
    (`0::`) line, else of the `name=systemd` line (cgroup v1). A container's own `libpod-*` cgroup below
    its unit is skipped, so its processes map to the quadlet unit that runs it; the user manager itself
    (`user@UID.service`) is nobody's service."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) == 3 and fields[1] in ("", "name=systemd"):
            paths[fields[1]] = fields[2]
    for key in ("", "name=systemd"):
        unit = _innermost_unit(paths.get(key, ""))
        if unit is not None:
            return unit
    return None


def _innermost_unit(path: str) -> str | None:
    for part in reversed(path.strip().split("/")):
        if _LIBPOD.fullmatch(part) or part in ("container", "payload", "supervisor"):
            continue
        if _MANAGER.fullmatch(part):
            return None
        if part.endswith((".service", ".scope")):
            return part
    return None


UNATTRIBUTED = ""  # the key of memory held by processes whose cgroup names no unit


def memory_by_unit(processes: Iterable[GpuProcess], proc: Path = Path("/proc")) -> dict[str, int]:
    """GPU memory (bytes, all GPUs together) per systemd unit; processes NVML cannot size are skipped.

    Memory of processes in no unit's cgroup is summed under UNATTRIBUTED, so that nobody reads a
    service's 0 as "uses none" when its processes were only not found (rootless podman on cgroup v1
    runs containers with --cgroups=enabled, in scopes outside their unit)."""
    out: dict[str, int] = {}
    for p in processes:
        if p.used is None:
            continue
        text = p.cgroup if p.cgroup is not None else read_cgroup(p.pid, proc)
        unit = (unit_of_cgroup(text) if text else None) or UNATTRIBUTED
        out[unit] = out.get(unit, 0) + p.used
    return out


def gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"


def sample_by_unit(env: dict[str, str] | None = None) -> dict[str, int]:
    """GPU memory per unit now, opening and closing NVML (for one-shot commands: status, apply)."""
    nvml = open_nvml(env)
    try:
        return memory_by_unit(nvml.processes())
    finally:
        nvml.close()
