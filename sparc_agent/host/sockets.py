"""Who holds a listening socket: `ss` (iproute2) asked about one port, its answer parsed here."""

from __future__ import annotations

import re

from sparc_agent.host.process import run

_USER = re.compile(r'\("([^"]*)",pid=(\d+),fd=\d+\)')


def holders_in_ss(text: str) -> list[str]:
    """'NAME (pid PID)' for every process in `ss -p` output, once each, in order."""
    found = [f"{name} (pid {pid})" for name, pid in _USER.findall(text)]
    return list(dict.fromkeys(found))


def port_holders(protocol: str, port: int) -> list[str]:
    """The processes bound to local port `port`/`protocol`, as far as `ss` may show them
    (a rootless user sees only its own processes); [] when none are visible or ss is missing."""
    flag = "-u" if protocol == "udp" else "-t"
    done = run(["ss", "-Hlnp", flag, f"sport = :{port}"], timeout=5)
    return holders_in_ss(done.stdout) if done.ok else []
