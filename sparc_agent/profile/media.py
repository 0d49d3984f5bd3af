"""Rules for the media path (URS signaling, the Unity renderer, TURN): the known ways a stack streams
nothing although every service runs. Warnings, since a profile may mean something else; the
references of a webrtc probe (services, secrets) are errors."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator

from sparc_agent.profile.model import Profile
from sparc_agent.profile.source import Path

_PORT_FLAG = re.compile(r"--(min|max)-port(?:=(\d+))?$")


def probe_secrets(profile: Profile) -> set[str]:
    """The secrets webrtc probes read (the TURN secret): used, though no container gets them."""
    found: set[str] = set()
    for svc in profile.services.values():
        block = svc.health.apart.get("webrtc") if svc.health is not None else None
        if block is not None:
            found |= {getattr(block, k) for k in ("turn_secret", "turn_password")} - {""}
    return found


def errors(profile: Profile) -> Iterator[tuple[Path, str]]:
    for name, svc in profile.services.items():
        block = svc.health.apart.get("webrtc") if svc.health is not None else None
        if block is not None:
            yield from _webrtc_errors(profile, ("services", name, "health", "webrtc"), block)


def _webrtc_errors(profile: Profile, where: Path, block: object) -> Iterator[tuple[Path, str]]:
    for key in ("signaling_service", "turn_service"):
        other = getattr(block, key)
        if other and other not in profile.services:
            yield (*where, key), f"no service {other!r} (services: {', '.join(profile.services)})"
    for key in ("turn_secret", "turn_password"):
        secret = getattr(block, key)
        if secret and secret not in profile.secrets:
            yield (*where, key), f"no secret {secret!r} declared in secrets:"
    for key, protocol in (("port", "tcp"), ("turn_port", "udp")):
        port = getattr(block, key)
        if not _published(profile, protocol, port):
            yield (
                (*where, key),
                (
                    f"{port}/{protocol} is not published in pod.ports: the webrtc probe reaches signaling"
                    " and TURN as a browser does, from outside the pod"
                ),
            )
    if getattr(block, "turn_user") and not getattr(block, "turn_password"):  # noqa: B009
        yield (*where, "turn_password"), "turn_user needs turn_password (the secret holding its password)"


def warnings(profile: Profile) -> Iterator[tuple[Path, str]]:
    for name, svc in profile.services.items():
        command = list(svc.command or ())
        where: Path = ("services", name, "command")
        if "--httpPort" in command or any(a.startswith("--httpPort=") for a in command):
            yield (
                where,
                (
                    "--httpPort is not a Unity Render Streaming signaling flag (the server exits on it):"
                    " run `node build/index.js -p 8080` (add -t http for HTTP polling)"
                ),
            )
        if "-batchmode" in command:
            yield (
                where,
                "Unity Render Streaming does not stream under -batchmode: drop it (keep -signalingUrl)",
            )
        relay = _relay_range(command)
        if relay is not None and not _udp_published(profile, *relay):
            yield (
                where,
                (
                    f"TURN relay range {relay[0]}-{relay[1]} is not published as udp in pod.ports:"
                    " browsers cannot reach the relayed media (make --min-port/--max-port match pod.ports)"
                ),
            )
        if (
            svc.health is not None
            and "webrtc" in svc.health.apart
            and importlib.util.find_spec("aiortc") is None
        ):
            yield (
                ("services", name, "health", "webrtc"),
                (
                    "the webrtc probe needs aiortc, which is not installed: pip install 'sparc-agent[webrtc]'"
                    " (until then it reports an error and the other probes go on)"
                ),
            )


def _relay_range(command: list[str]) -> tuple[int, int] | None:
    """coturn's --min-port/--max-port (`--x=N` or `--x N`), when both are given."""
    found: dict[str, int] = {}
    for i, arg in enumerate(command):
        m = _PORT_FLAG.match(arg)
        if m is None:
            continue
        value = m.group(2) or (command[i + 1] if i + 1 < len(command) else "")
        if value.isdigit():
            found[m.group(1)] = int(value)
    if "min" in found and "max" in found:
        return found["min"], found["max"]
    return None


def _published(profile: Profile, protocol: str, port: int) -> bool:
    return any(s.protocol == protocol and s.host[0] <= port <= s.host[1] for s in profile.pod.ports)


def _udp_published(profile: Profile, lo: int, hi: int) -> bool:
    """Every relay port published as itself: TURN tells browsers the port it relays on, inside the pod."""
    same: set[int] = set()
    for spec in profile.pod.ports:
        if spec.protocol == "udp" and spec.host == spec.container:
            same.update(range(spec.host[0], spec.host[1] + 1))
    return all(port in same for port in range(lo, hi + 1))
