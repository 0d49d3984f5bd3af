"""Export one profile to other schedulers: Kubernetes YAML (`kube`) and a SLURM batch script (`slurm`).

Both exporters read only the validated `Profile`; what a target cannot express is written into the
output as a comment, never dropped silently (docs/export.md lists it all).
"""

from __future__ import annotations

from sparc_agent.profile.model import PortSpec, Profile


def source_label(source: str) -> str:
    """The profile's path as an export's header comment names it.

    The path comes from the command line, not from the validated profile: a newline in a file name
    would end the comment and start a shell command (SLURM), a live key (YAML) or a directive (NGINX).
    A name that is not plainly printable is written escaped, as Python's ascii() does: quoted, with
    \\n, \\x85, \\u2028 and the like spelled out.
    """
    if not source:
        return "a profile"
    return source if source.isprintable() else ascii(source)


def published(profile: Profile, host_port: int, protocol: str) -> tuple[PortSpec, int] | None:
    """The pod.ports entry publishing host_port/protocol and the container port it maps to."""
    for spec in profile.pod.ports:
        if spec.protocol == protocol and spec.host[0] <= host_port <= spec.host[1]:
            return spec, spec.container[0] + host_port - spec.host[0]
    return None


def container_port(profile: Profile, host_port: int, protocol: str = "tcp") -> int:
    """Probes name the HOST port (the agent probes from the host); inside the pod it is this one."""
    found = published(profile, host_port, protocol)
    # validation guarantees every probe port is published; fall back to the same number regardless
    return found[1] if found else host_port


def host_ip(profile: Profile, spec: PortSpec) -> str:
    return spec.host_ip if spec.host_ip is not None else profile.pod.bind


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


def port_pairs(spec: PortSpec) -> list[tuple[int, int]]:
    """(host, container) for every port of a possibly ranged entry."""
    return [(h, spec.container[0] + h - spec.host[0]) for h in range(spec.host[0], spec.host[1] + 1)]
