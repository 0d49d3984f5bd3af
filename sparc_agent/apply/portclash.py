"""Why a pod did not start when one of its published ports is taken: the start job of an innocent
service fails with "dependency"; the cause, podman's `bind: address already in use`, is only in the
pod unit's journal. Read it there and name port, protocol, publishing service and holder.

One home for apply (its start job failed) and the agent (its restart failed): neither needs the
profile model, only the table of publishers (profile.rules.port_publishers) apply records in each
generation's plan."""

from __future__ import annotations

import re
from collections.abc import Mapping

from sparc_agent.errors import JobFailed, SparcError
from sparc_agent.host.journal import journal_tail
from sparc_agent.host.sockets import port_holders
from sparc_agent.profile.names import port_key

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


def describe(
    publishers: Mapping[str, str], protocol: str, address: str, port: int, holders: list[str]
) -> str:
    # `ss -p` shows only this user's processes, and is missing where iproute2 is not installed
    held = (
        f"held by {', '.join(holders)}"
        if holders
        else "its holder is not visible (to this user, or without ss)"
    )
    publisher = publishers.get(port_key(protocol, port), "not in pod.ports")
    return (
        f"port {address}:{port}/{protocol} is already in use ({held}); it is published for"
        f" {publisher}: stop the holder or change pod.ports"
    )


def pod_failure(pod_unit: str, publishers: Mapping[str, str]) -> str:
    """What made the pod unit fail: a taken port when its journal says so, else its last log lines.
    (Blocking: journalctl and ss run.)"""
    tail = journal_tail(pod_unit, 30)
    clash = bind_clash(tail)
    if clash is None:
        return f"the pod {pod_unit} did not start" + (f"; last log lines:\n{tail}" if tail else "")
    protocol, address, port = clash
    return f"the pod {pod_unit} did not start: " + describe(
        publishers, protocol, address, port, port_holders(protocol, port)
    )


def blamed_on_the_pod(exc: SparcError, pod_unit: str, publishers: Mapping[str, str]) -> str | None:
    """A start job that failed with "dependency" blames its unit for what it requires, the pod: the
    failure and why the pod did not start. None for any other failure. (Blocking, as pod_failure.)"""
    if not (isinstance(exc, JobFailed) and exc.result == "dependency"):
        return None
    return f"{exc}: " + pod_failure(pod_unit, publishers)
