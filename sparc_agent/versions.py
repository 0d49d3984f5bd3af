"""Versions of podman, quadlet and systemd: the one `Version` type and parser, what each version
allows, and the `Target` the files are rendered for.

Pure: no processes, no I/O, nothing of sparc_agent imported, so that render (which must never spawn),
host detection, doctor and the agent all share it. `host.detect` finds what a machine runs.

Quadlet keys arrive with podman releases (podlet keeps the same table); where
a key is too new, the renderer falls back to the `podman run` flag through
PodmanArgs= or to an equivalent unit, and refuses only what has no equivalent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

_VERSION = re.compile(r"\bv?(\d+)(?:\.(\d+))?")


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int = 0

    @classmethod
    def parse(cls, text: str) -> Version:
        """A version a user wrote (`5.4`, `v4.3.1`, `252`): it must start the text."""
        m = _VERSION.match(text.strip())
        if not m:
            raise ValueError(f"not a version: {text!r} (allowed: X.Y, e.g. 4.4 or 5.4)")
        return cls._of(m)

    @classmethod
    def find(cls, text: str) -> Version | None:
        """The first version in a tool's output: "podman version 4.3.1" -> 4.3, "systemd 252 (252.38-1)"
        and the bus's "252.38-1~deb12u1" -> 252.x; None when there is none."""
        m = _VERSION.search(text)
        return cls._of(m) if m else None

    @classmethod
    def _of(cls, m: re.Match[str]) -> Version:
        return cls(int(m.group(1)), int(m.group(2) or 0))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return (self.major, self.minor) < (other.major, other.minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


# the first quadlet (podman) version that knows each key or file type
QUADLET_SINCE = {
    "quadlet": Version(4, 4),
    "Secret": Version(4, 5),
    "LogDriver": Version(4, 5),
    "PidsLimit": Version(4, 7),
    "VolumeName": Version(4, 8),
    # .pod files arrived in 5.0, but only 5.1's StartWithPod= stops a pod from starting every
    # container at once, which would defeat `depends_on: healthy`; before that, a pod unit of our own
    ".pod": Version(5, 1),
    # follows a symlinked subdirectory of its search path (podman #23755, 5.3.0): what makes
    # sparc-agent's generation switch one rename (state.live); older ones get journaled flat files
    "atomic switch": Version(5, 3),
}
# podman (runtime) behaviour the files must work around
PODMAN_DELETES_ID_FILES = Version(5, 0)  # older podman leaves %t/%N.cid behind: restarts fail
PODMAN_VOLUME_CREATE_IGNORE = Version(4, 4)  # quadlet's `.volume` runs `volume create --ignore`
# systemd: RestartSteps=/RestartMaxDelaySec= give exponential restart backoff natively
SYSTEMD_RESTART_STEPS = 254


@dataclass(frozen=True)
class Target:
    podman: Version = Version(5, 4)
    quadlet: Version = Version(5, 4)  # the generator usually ships with podman; test hosts may differ
    systemd: int = 252
    # rootless podman where cgroup v1 controllers exist (v1 or hybrid hosts): quadlet's --cgroups=split
    # cannot create the controller dirs ("mkdir /sys/fs/cgroup/pids/...: permission denied"); the
    # containers run with --cgroups=enabled instead. Never set for root or for cgroup v2 (PubApps).
    rootless_v1_cgroups: bool = False

    @classmethod
    def for_podman(cls, version: str, systemd: int = 252) -> Target:
        v = Version.parse(version)
        return cls(podman=v, quadlet=v, systemd=systemd)

    def has(self, feature: str) -> bool:
        return self.quadlet >= QUADLET_SINCE[feature]
