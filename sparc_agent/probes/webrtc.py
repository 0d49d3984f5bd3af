"""webrtc: what a person opening the page gets: a video frame from the renderer, through signaling and TURN.

The session itself (URS signaling, aiortc, relay-only ICE, DTLS, decoding) runs in a short-lived
child process, `python -m sparc_agent.probes.webrtc_session`, spawned through host.process and
killed with its process group at the spec's timeout: a hang cannot block supervision, and aiortc and
PyAV (tens of MB) never load into the agent. The child reports each phase as a JSON line on stdout
as it completes it, so even a killed session says how far it got.

Phases, in order: signaling (connected, connection created), ice_gather (relay candidates from TURN;
gathering happens when the offer is made), answer (the renderer's answer, or its own offer as URS
3.1+ sends with perfect negotiation), ice_connect, dtls, first_frame (a decoded frame: codec and
size). A failure names its phase, a hint a person can act on, and the service it points at (the
signaling or TURN service named in the spec), so the supervisor does not restart the renderer for
another service's fault.

TURN credentials are never in argv, unit files or logs: the spec names a profile secret; the child
reads its source (a 0600 file, or an environment variable it inherits) and derives short-lived TURN
REST credentials (coturn's use-auth-secret): user `EXPIRY:sparc-probe`, password
base64(HMAC-SHA1(secret, user)). Static `turn_user` + a password secret work too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from sparc_agent.probes.base import ProbeOutcome, ProbeResult, Target
from sparc_agent.probes.fields import Checked, HttpPath, Port, Text
from sparc_agent.profile import scalars

PHASES = ("signaling", "ice_gather", "answer", "ice_connect", "dtls", "first_frame")
EXTRA = "pip install 'sparc-agent[webrtc]'"
USER_SUFFIX = "sparc-probe"
CREDENTIAL_TTL_S = 600
KILL_GRACE_S = 2.0  # past the timeout, the child's own deadline has fired and it is only reporting

# what a person can do when a phase fails; the child may say something more precise
HINTS = {
    "signaling": "signaling server not reachable or not speaking URS (check its port and its -t mode)",
    "ice_gather": "no relay candidate: TURN refused the credentials or its UDP port is unreachable",
    "answer": "no renderer answered: is it running, not in -batchmode, and given -signalingUrl?",
    "ice_connect": "relay ports not reachable: the TURN relay range (min-port..max-port/udp) is blocked"
    " or not published",
    "dtls": "DTLS handshake failed after ICE: the renderer's WebRTC stack or a middlebox",
    "first_frame": "renderer sends no video (connected, but no frame decoded in time)",
}
# the spec field naming the service a phase's failure points at; the others are the renderer's own
BLAME = {"signaling": "signaling_service", "ice_gather": "turn_service", "ice_connect": "turn_service"}

Seconds = Annotated[float, Checked(scalars.parse_duration)]
Mode = Annotated[str, Checked(lambda v: _one_of(v, ("websocket", "http")))]


def _one_of(value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"invalid value {value!r} (allowed: {', '.join(allowed)})")
    return str(value)


@dataclass(frozen=True)
class WebRtcSpec:
    """A browser's session with the renderer. `port` is the signaling server's (tcp)."""

    port: Port
    path: HttpPath = "/"
    signaling: Mode = "websocket"  # URS `-t websocket` (default) or `-t http` (polling, Session-Id)
    signaling_service: Text = ""  # the services a failure may point at (see BLAME)
    turn_service: Text = ""
    turn_port: Port = 3478
    turn_secret: Text = ""  # a profile secret: coturn's static-auth-secret (use-auth-secret)
    turn_user: Text = ""  # or static credentials: a user and a secret holding its password
    turn_password: Text = ""
    host: Text = ""  # where signaling and TURN are reached; empty: the probe's target (127.0.0.1)
    interval: Seconds = 60.0
    timeout: Seconds = 30.0
    frame_timeout: Seconds = 5.0

    @property
    def timeout_s(self) -> float:
        return self.timeout


def turn_rest_credentials(secret: bytes, now: float, ttl_s: int = CREDENTIAL_TTL_S) -> tuple[str, str]:
    """coturn's use-auth-secret: user `EXPIRY:NAME`, password base64(HMAC-SHA1(secret, user))."""
    user = f"{int(now) + ttl_s}:{USER_SUFFIX}"
    return user, base64.b64encode(hmac.new(secret, user.encode(), hashlib.sha1).digest()).decode()


def session_request(spec: WebRtcSpec, target: Target) -> dict[str, Any]:
    """What the child needs: the spec, the host, and where secrets are read from (never their values)."""
    sources: Mapping[str, Mapping[str, str]] = target.secrets
    wanted = [name for name in (spec.turn_secret, spec.turn_password) if name]
    missing = [name for name in wanted if name not in sources]
    if missing:
        raise LookupError(f"secret {missing[0]!r} is not declared in the profile's secrets")
    return {
        "spec": {k: getattr(spec, k) for k in spec.__dataclass_fields__},
        "host": spec.host or target.host,
        "secrets": {name: dict(sources[name]) for name in wanted},
    }


async def probe(spec: WebRtcSpec, target: Target) -> ProbeResult:
    from sparc_agent.host.process import kill_group, spawn

    start = time.monotonic()
    try:
        request = session_request(spec, target)
    except LookupError as exc:
        return ProbeResult(ProbeOutcome.ERROR, 0.0, str(exc), phase="signaling")
    argv = [sys.executable, "-m", "sparc_agent.probes.webrtc_session", json.dumps(request)]
    proc = await spawn(argv, stdout="pipe", stderr="pipe", new_session=True)
    report = _Report()
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(spec.timeout + KILL_GRACE_S):
            while line := await proc.stdout.readline():
                report.read(line)
            await proc.wait()
    except TimeoutError:
        report.killed = True
    finally:
        kill_group(proc)
        with contextlib.suppress(ProcessLookupError):
            await proc.wait()
    stderr = (await proc.stderr.read())[-2000:].decode(errors="replace")
    return report.result(spec, time.monotonic() - start, proc.returncode, stderr)


class _Report:
    """The child's JSON lines: {"phase", "s", ...} per phase done, then {"ok": ...} or {"failed": ...}."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.facts: dict[str, Any] = {}
        self.end: dict[str, Any] | None = None
        self.killed = False

    def read(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        if "phase" in msg and isinstance(msg.get("s"), int | float):
            self.timings[str(msg["phase"])] = float(msg["s"])
            self.facts.update({k: v for k, v in msg.items() if k not in ("phase", "s")})
        elif "ok" in msg or "failed" in msg or "error" in msg:
            self.end = msg

    def next_phase(self) -> str:
        return next((p for p in PHASES if p not in self.timings), PHASES[-1])

    def result(self, spec: WebRtcSpec, wall: float, rc: int | None, stderr: str) -> ProbeResult:
        end = self.end or {}
        timings = {p: self.timings[p] for p in PHASES if p in self.timings}
        if end.get("ok"):
            return ProbeResult(
                ProbeOutcome.OK, wall, self._summary(), phase="first_frame", timings=timings, facts=self.facts
            )
        if "error" in end:  # ours: aiortc missing, a bug in the session
            return ProbeResult(
                ProbeOutcome.ERROR, wall, str(end["error"]), phase=self.next_phase(), timings=timings
            )
        phase = str(end.get("failed") or self.next_phase())
        if self.killed:
            detail = f"no progress within the {spec.timeout:g}s timeout (session killed)"
        elif not end:
            last = stderr.strip().splitlines()[-1:] or [f"exit {rc}"]
            return ProbeResult(
                ProbeOutcome.ERROR, wall, f"probe session died: {last[0]}", phase=phase, timings=timings
            )
        else:
            detail = str(end.get("detail", ""))
        blamed = getattr(spec, BLAME.get(phase, ""), "") if phase in BLAME else ""
        return ProbeResult(
            ProbeOutcome.FAILED,
            wall,
            detail,
            phase=phase,
            timings=timings,
            hint=str(end.get("hint") or HINTS[phase]),
            cause=blamed,
            facts=self.facts,
        )

    def _summary(self) -> str:
        f = self.facts
        frame = f"first frame {f.get('codec', '?')} {f.get('width', '?')}x{f.get('height', '?')}"
        return (
            f"{frame} after {self.timings.get('first_frame', 0):.2f}s, {f.get('relay_candidates', 0)} relay"
        )
