"""Why a pod did not start when one of its published ports is taken: the start job of an innocent
service fails with "dependency"; the cause, podman's `bind: address already in use`, is only in the
pod unit's journal. Read it there and name port, protocol, publishing service and holder."""

from __future__ import annotations

import re

from sparc_agent.host.journal import journal_tail
from sparc_agent.host.sockets import port_holders
from sparc_agent.profile.model import Profile
from sparc_agent.profile.names import Names
from sparc_agent.profile.rules import port_publisher

# podman/rootlessport: "listen tcp 127.0.0.1:8080: bind: address already in use" (tcp4/udp6 too;
# the address may be empty or bracketed)
_BIND = re.compile(r"listen (tcp|udp)[46]? \[?([0-9A-Fa-f.:]*?)\]?:(\d+): bind: address already in use")


def bind_clash(log: str) -> tuple[str, str, int] | None:
    """(protocol, address, port) of the last 'address already in use' in a log, or None."""
    found = _BIND.findall(log)
    if not found:
        return None
    protocol, address, port = found[-1]
    return protocol, address or "*", int(port)


def describe(profile: Profile, protocol: str, address: str, port: int, holders: list[str]) -> str:
    held = f"held by {', '.join(holders)}" if holders else "its holder is not visible to this user"
    return (
        f"port {address}:{port}/{protocol} is already in use ({held}); it is published for"
        f" {port_publisher(profile, protocol, port)}: stop the holder or change pod.ports"
    )


def pod_failure(profile: Profile) -> str:
    """What made the pod unit fail: a taken port when its journal says so, else its last log lines."""
    unit = Names(profile.name).pod_unit
    tail = journal_tail(unit, 30)
    clash = bind_clash(tail)
    if clash is None:
        return f"the pod {unit} did not start" + (f"; last log lines:\n{tail}" if tail else "")
    protocol, address, port = clash
    return f"the pod {unit} did not start: " + describe(
        profile, protocol, address, port, port_holders(protocol, port)
    )
