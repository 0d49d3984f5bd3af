"""What this host runs: podman, its quadlet generator, systemd. Read once, by running them."""

from __future__ import annotations

import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sparc_agent.host.process import run
from sparc_agent.render.versions import Target, Version

QUADLET_PATHS = ("/usr/libexec/podman/quadlet", "/usr/lib/podman/quadlet")


@dataclass(frozen=True)
class HostVersions:
    podman: Version | None
    quadlet: Version | None
    quadlet_path: str | None
    systemd: int | None
    rootless_v1_cgroups: bool = False  # see Target.rootless_v1_cgroups

    def target(self) -> Target:
        default = Target()
        podman = self.podman or default.podman
        return Target(
            podman=podman,
            quadlet=self.quadlet or podman,
            systemd=self.systemd or default.systemd,
            rootless_v1_cgroups=self.rootless_v1_cgroups,
        )


def rootless_v1_cgroups(cgroup_root: Path = Path("/sys/fs/cgroup")) -> bool:
    """Rootless, on a host whose cgroup v1 controllers are mounted (v1 or hybrid; not pure v2)."""
    return os.geteuid() != 0 and not (cgroup_root / "cgroup.controllers").exists()


def _output(argv: list[str]) -> str | None:
    done = run(argv)
    return done.stdout if done.ok else None


def _version(text: str | None) -> Version | None:
    m = re.search(r"(\d+)\.(\d+)", text or "")
    return Version(int(m.group(1)), int(m.group(2))) if m else None


def detect() -> HostVersions:
    quadlet_path = next((p for p in QUADLET_PATHS if shutil.which(p)), None)
    commands = {
        "podman": ["podman", "--version"] if shutil.which("podman") else None,
        "quadlet": [quadlet_path, "-version"] if quadlet_path else None,
        "systemd": ["systemctl", "--version"] if shutil.which("systemctl") else None,
    }
    with ThreadPoolExecutor(3) as pool:  # three short processes at once, not one after another
        results = pool.map(lambda argv: _output(argv) if argv else None, commands.values())
        outputs = dict(zip(commands, results, strict=True))
    m = re.search(r"systemd (\d+)", outputs["systemd"] or "")
    return HostVersions(
        _version(outputs["podman"]),
        _version(outputs["quadlet"]),
        quadlet_path,
        int(m.group(1)) if m else None,
        rootless_v1_cgroups(),
    )
