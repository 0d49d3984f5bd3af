"""Naming, in one home: what a name may be, which names are taken, and what every object of a
stack is called (files, systemd units, podman containers, volumes, secrets, labels).

The profile validates with `name_problem` and `collisions`, render writes the files `Names` gives,
and apply, the agent, the CLI and the exporters find units and podman objects through `Names` too,
so that a rule changed here is changed everywhere. Pure: imports nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

SLUG = re.compile(r"[a-z][a-z0-9-]*")
MAX_STACK = 40
MAX_SERVICE = 30
MAX_OBJECT = 40

QUADLET_DIR = "containers/systemd"  # relative to $XDG_CONFIG_HOME: the rootless locations
UNIT_DIR = "systemd/user"

AGENT = "sparc-agent"
AGENT_UNIT = f"{AGENT}.service"
LABEL_STACK = "io.sparc-agent.stack"
LABEL_SERVICE = "io.sparc-agent.service"

# the user manager's special units (systemd.special(7)): writing one changes the manager itself
SPECIAL_TARGETS = (
    "basic",
    "default",
    "exit",
    "shutdown",
    "sockets",
    "timers",
    "paths",
    "bluetooth",
    "printer",
    "smartcard",
    "sound",
    "graphical-session",
    "graphical-session-pre",
    "xdg-desktop-autostart",
)
RESERVED_UNITS = {
    AGENT_UNIT: "the agent's own unit",
    "dbus.service": "the user's D-Bus daemon",
    "dbus.socket": "the user's D-Bus socket",
    **{f"{t}.target": "a special target of the user manager (systemd.special(7))" for t in SPECIAL_TARGETS},
}
# unit name prefixes of what the stack runs on; a stack unit there could shadow one of theirs
RESERVED_PREFIXES = {
    AGENT: "sparc-agent's own units",
    "dbus-": "the user's D-Bus daemon (dbus-broker.service, ...)",
    "dbus.": "the user's D-Bus daemon",
    "systemd-": "systemd's own units",
    "podman-": "podman's own units (podman-auto-update.service, ...)",
}


def name_problem(value: str, what: str, max_len: int) -> str | None:
    """Why `value` cannot be a `what` (a stack, service, volume or secret name), or None."""
    if not SLUG.fullmatch(value) or len(value) > max_len or value.endswith("-"):
        return (
            f"invalid {what} {value!r} (allowed: a lowercase letter, then lowercase letters, digits"
            f" and '-', not ending in '-', at most {max_len} characters)"
        )
    return None


def reserved_unit(unit: str) -> str | None:
    """Whose unit `unit` is, when it is not a stack's to write; else None."""
    if unit in RESERVED_UNITS:
        return RESERVED_UNITS[unit]
    return next((who for prefix, who in RESERVED_PREFIXES.items() if unit.startswith(prefix)), None)


def unit_of(rel: str) -> str:
    """The systemd unit a generated file becomes (quadlet's naming rules)."""
    name = rel.rsplit("/", 1)[-1]
    stem, _, suffix = name.rpartition(".")
    return {
        "container": f"{stem}.service",
        "pod": f"{stem}-pod.service",
        "volume": f"{stem}-volume.service",
    }.get(suffix, name)


def port_key(protocol: str, port: int) -> str:
    """A host port as a generation's publishers table keys it (rules.port_publishers, apply.portclash)."""
    return f"{port}/{protocol}"


class Names:
    """Every name the stack's files and objects use, in one place."""

    def __init__(self, stack: str) -> None:
        self.stack = stack
        self.pod = stack
        self.target = f"{stack}.target"
        self.target_file = f"{UNIT_DIR}/{self.target}"
        self.pod_quadlet = f"{QUADLET_DIR}/{stack}.pod"  # podman >= 5; quadlet makes it pod_unit
        self.pod_unit = unit_of(self.pod_quadlet)
        self.pod_unit_file = f"{UNIT_DIR}/{self.pod_unit}"  # what stands in for it on older podman
        self.infra_container = self._member("infra")  # what quadlet names the pod's infra container
        self.local_service = self._member("local")  # exporters: the Kubernetes Service of loopback ports

    def _member(self, name: str) -> str:
        """A podman object of the stack (container, volume, secret): the stack's name, '-', its own."""
        return f"{self.stack}-{name}"

    container = volume = secret = _member

    def container_file(self, service: str) -> str:
        return f"{QUADLET_DIR}/{self.container(service)}.container"

    def volume_file(self, volume: str) -> str:
        return f"{QUADLET_DIR}/{self.volume(volume)}.volume"

    def volume_unit_file(self, volume: str) -> str:
        """The plain unit that creates a volume where quadlet's .volume cannot (render's fallback)."""
        return f"{UNIT_DIR}/{self.volume_unit(volume)}"

    def service_unit(self, service: str) -> str:
        return unit_of(self.container_file(service))

    def volume_unit(self, volume: str) -> str:
        return unit_of(self.volume_file(volume))

    def labels(self, service: str | None = None) -> list[str]:
        """The podman labels that mark the stack's objects (and a service's container)."""
        return [f"{LABEL_STACK}={self.stack}", *([f"{LABEL_SERVICE}={service}"] if service else [])]


Key = tuple[str | int, ...]


def stack_units(
    stack: str, services: Iterable[str], volumes: Iterable[str]
) -> Iterator[tuple[str, Key, str]]:
    """(unit name, the profile key that makes it, what it is) for every unit a stack can have."""
    names = Names(stack)
    yield names.target, ("name",), "the stack's target"
    yield names.pod_unit, ("name",), "the stack's pod"
    for volume in volumes:
        yield names.volume_unit(volume), ("volumes", volume), f"the unit of volumes.{volume}"
    for service in services:
        yield names.service_unit(service), ("services", service), f"the unit of services.{service}"


def collisions(stack: str, services: Iterable[str], volumes: Iterable[str]) -> Iterator[tuple[Key, str]]:
    """(key, why) for every name of a stack that is taken: by the system, or by another key of the
    same stack (a service `pod` would be the pod's unit, and quadlet silently drops one of the two)."""
    names = Names(stack)
    services = list(services)
    seen: dict[str, str] = {}
    blamed: set[Key] = set()  # one reason per key; none for the rest when the stack name is taken

    def blame(key: Key, why: str) -> Iterator[tuple[Key, str]]:
        if key not in blamed and ("name",) not in blamed:
            blamed.add(key)
            yield key, why

    for unit, key, what in stack_units(stack, services, volumes):
        whose = reserved_unit(unit)
        if whose is not None:
            yield from blame(key, f"would write the unit {unit}, which is {whose}: choose another name")
        elif unit in seen:
            yield from blame(key, f"would write the unit {unit}, which is also {seen[unit]}: rename one")
        seen.setdefault(unit, what)
    for service in services:
        if names.container(service) == names.infra_container:
            yield from blame(
                ("services", service),
                f"its container {names.container(service)} would be the pod's infra container: rename it",
            )
