"""What this host runs: podman, its quadlet generator, systemd. Read once, by running them."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from .render.versions import Target, Version

QUADLET_PATHS = ("/usr/libexec/podman/quadlet", "/usr/lib/podman/quadlet")


@dataclass(frozen=True)
class HostVersions:
    podman: Version | None
    quadlet: Version | None
    quadlet_path: str | None
    systemd: int | None

    def target(self) -> Target:
        default = Target()
        podman = self.podman or default.podman
        return Target(podman=podman, quadlet=self.quadlet or podman, systemd=self.systemd or default.systemd)


def _output(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _version(text: str | None) -> Version | None:
    m = re.search(r"(\d+)\.(\d+)", text or "")
    return Version(int(m.group(1)), int(m.group(2))) if m else None


def detect() -> HostVersions:
    podman = _version(_output(["podman", "--version"])) if shutil.which("podman") else None
    quadlet_path = next((p for p in QUADLET_PATHS if shutil.which(p)), None)
    quadlet = _version(_output([quadlet_path, "-version"])) if quadlet_path else None
    systemd_out = _output(["systemctl", "--version"]) if shutil.which("systemctl") else None
    m = re.search(r"systemd (\d+)", systemd_out or "")
    return HostVersions(podman, quadlet, quadlet_path, int(m.group(1)) if m else None)
