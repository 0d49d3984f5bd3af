"""What this host runs: podman, its quadlet generator, systemd and the distribution. Read once, by
running them; the one detection that doctor, `render` and `apply` all use.

The environment may point it elsewhere (tests do; so can a site with odd paths):
  SPARC_QUADLET   the quadlet binary to use instead of /usr/libexec/podman/quadlet, /usr/lib/podman/quadlet
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sparc_agent.host.process import run
from sparc_agent.versions import Target, Version

QUADLET_PATHS = ("/usr/libexec/podman/quadlet", "/usr/lib/podman/quadlet")


@dataclass(frozen=True)
class Tool:
    """One program: where it is (None: not found) and the version it printed (None: none)."""

    path: str | None = None
    version: Version | None = None
    text: str = ""  # the version as printed, e.g. "4.3.1" or "252.38-1~deb12u1"


@dataclass(frozen=True)
class HostVersions:
    podman: Tool
    quadlet: Tool
    systemd: Tool
    distro: str = ""  # os-release's PRETTY_NAME, "" when unknown
    rootless_v1_cgroups: bool = False  # see Target.rootless_v1_cgroups
    quadlet_looked: tuple[str, ...] = QUADLET_PATHS  # where the quadlet binary was looked for

    def target(self) -> Target:
        """What to render for: what runs here; the defaults where a version is unknown."""
        default = Target()
        podman = self.podman.version or default.podman
        return Target(
            podman=podman,
            quadlet=self.quadlet.version or podman,
            systemd=self.systemd.version.major if self.systemd.version else default.systemd,
            rootless_v1_cgroups=self.rootless_v1_cgroups,
        )


def rootless_v1_cgroups(cgroup_root: Path = Path("/sys/fs/cgroup")) -> bool:
    """Rootless, on a host whose cgroup v1 controllers are mounted (v1 or hybrid; not pure v2)."""
    return os.geteuid() != 0 and not (cgroup_root / "cgroup.controllers").exists()


def quadlet_candidates(env: Mapping[str, str]) -> tuple[str, ...]:
    override = env.get("SPARC_QUADLET")
    return (override,) if override else QUADLET_PATHS


def binaries(env: Mapping[str, str] | None = None, root: Path = Path("/")) -> list[str]:
    """The programs detection reads, found without running any (the no-op key stats them)."""
    env = os.environ if env is None else env
    return [p for p in _paths(env, root) if p]


def _paths(env: Mapping[str, str], root: Path) -> tuple[str | None, str | None, str | None]:
    def which(name: str) -> str | None:
        return shutil.which(name, path=env.get("PATH", os.defpath))

    def runnable(path: str) -> bool:
        return (root / path.lstrip("/")).is_file() and os.access(root / path.lstrip("/"), os.X_OK)

    quadlet = next((c for c in quadlet_candidates(env) if runnable(c)), None)
    return which("podman"), quadlet, which("systemctl")


def _last_word(out: str) -> str:  # "podman version 4.3.1" -> "4.3.1"
    return out.split()[-1] if out else ""


def _in_parentheses(out: str) -> str:  # "systemd 252 (252.38-1~deb12u1)\n+PAM ..." -> "252.38-1~deb12u1"
    first = out.splitlines()[0] if out else ""
    return first.partition("(")[2].rstrip(")") or _last_word(first)


def _tool(
    path: str | None, binary: str, flag: str, env: Mapping[str, str], text: Callable[[str], str]
) -> Tool:
    """`binary flag` (binary: `path` as found under the detection's root); `path` None: not found."""
    if path is None:
        return Tool()
    done = run([binary, flag], env=env)
    out = done.stdout.strip() if done.ok else ""
    return Tool(path, Version.find(out), text(out))


def distro(root: Path = Path("/")) -> str:
    """PRETTY_NAME from os-release (the file systemd and every distribution read), "" if none."""
    for rel in ("etc/os-release", "usr/lib/os-release"):
        try:
            lines = (root / rel).read_text(errors="replace").splitlines()
        except OSError:
            continue
        fields = dict(line.split("=", 1) for line in lines if "=" in line)
        return fields.get("PRETTY_NAME", "").strip().strip("\"'")
    return ""


def detect(env: Mapping[str, str] | None = None, root: Path = Path("/")) -> HostVersions:
    """Run podman, quadlet and systemctl for their versions (at once: three short processes).

    `root` points the file lookups (quadlet, os-release, cgroups) at another tree, for tests.
    """
    env = dict(os.environ if env is None else env)
    podman, quadlet, systemctl = _paths(env, root)
    jobs = [
        (podman, podman or "", "--version", _last_word),
        (quadlet, str(root / (quadlet or "").lstrip("/")), "-version", _last_word),
        (systemctl, systemctl or "", "--version", _in_parentheses),
    ]
    with ThreadPoolExecutor(3) as pool:
        podman_tool, quadlet_tool, systemd_tool = pool.map(
            lambda job: _tool(job[0], job[1], job[2], env, job[3]), jobs
        )
    return HostVersions(
        podman_tool,
        quadlet_tool,
        systemd_tool,
        distro(root),
        rootless_v1_cgroups(root / "sys/fs/cgroup"),
        quadlet_candidates(env),
    )
