"""The webrtc probe's session, in its own short-lived process (see probes/webrtc.py for why).

    python -m sparc_agent.probes.webrtc_session REQUEST_JSON

REQUEST_JSON holds the spec, the host, and where each secret is read from (a file or an environment
variable), never a secret's value. Prints one JSON line per phase done ({"phase", "s", ...facts}),
then {"ok": true}, {"failed": PHASE, "detail", "hint"} or {"error": ...} (ours: aiortc missing).
Exits 0 whatever the verdict: the verdict is in the lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import time
import uuid
from typing import Any

from sparc_agent.probes import urs
from sparc_agent.probes.webrtc import EXTRA, turn_rest_credentials

# at most, within the timeout: a renderer answers and ICE through a relay completes in well under a
# second; nothing by then means nothing will come (and the probe reports it without idling)
ANSWER_WAIT_S = 5.0
ICE_WAIT_S = 5.0
POLL_S = 0.02


class Failed(Exception):
    def __init__(self, phase: str, detail: str, hint: str = "") -> None:
        super().__init__(detail)
        self.phase, self.detail, self.hint = phase, detail, hint


def emit(**msg: Any) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def read_secret(source: dict[str, str]) -> str:
    """The secret's value; a file may also be coturn's config line `static-auth-secret=VALUE`."""
    if "file" in source:
        with open(os.path.expanduser(source["file"]), encoding="utf-8") as f:
            text = f.read().strip()
        for line in text.splitlines():
            key, eq, value = line.partition("=")
            if eq and key.strip() == "static-auth-secret":
                return value.strip()
        return text
    env = os.environ.get(source.get("env", ""))
    if env is None:
        raise Failed("ice_gather", f"environment variable {source.get('env')} is not set", "")
    return env.strip()


def turn_login(spec: dict[str, Any], secrets: dict[str, dict[str, str]]) -> tuple[str, str]:
    if spec["turn_secret"]:
        return turn_rest_credentials(read_secret(secrets[spec["turn_secret"]]).encode(), time.time())
    if spec["turn_user"]:
        return spec["turn_user"], read_secret(secrets[spec["turn_password"]]) if spec["turn_password"] else ""
    return "", ""


def relay_candidates(sdp: str) -> list[str]:
    return [line[2:] for line in sdp.splitlines() if line.startswith("a=candidate:") and " typ relay" in line]


def video_codec(sdp: str) -> str:
    """The first codec of the video m-line: the one an answer settles on."""
    m = re.search(r"^m=video \d+ \S+ (\d+)", sdp, re.M)
    if not m:
        return "?"
    rtpmap = re.search(rf"^a=rtpmap:{m.group(1)} ([^/\s]+)", sdp, re.M)
    return rtpmap.group(1) if rtpmap else "?"


class Session:
    def __init__(self, request: dict[str, Any]) -> None:
        self.spec: dict[str, Any] = request["spec"]
        self.host: str = request["host"]
        self.secrets: dict[str, dict[str, str]] = request["secrets"]
        self.t0 = time.monotonic()
        self.pc: Any = None
        self.frame: asyncio.Future[Any] | None = None
        self.sig: urs.Signaling | None = None
        self.tasks: set[asyncio.Future[None]] = set()  # held: the loop keeps only weak references

    def since(self) -> float:
        return round(time.monotonic() - self.t0, 4)

    def new_pc(self) -> Any:
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
        from aiortc.rtcconfiguration import RTCIceTransportPolicy

        user, password = turn_login(self.spec, self.secrets)
        server = RTCIceServer(
            urls=f"turn:{self.host}:{self.spec['turn_port']}?transport=udp",
            username=user,
            credential=password,
        )
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[server], iceTransportPolicy=RTCIceTransportPolicy.RELAY)
        )
        self.frame = asyncio.get_running_loop().create_future()

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "video":
                self.tasks.add(asyncio.ensure_future(self._first_frame(track)))

        return pc

    async def _first_frame(self, track: Any) -> None:
        try:
            frame = await track.recv()
        except Exception as exc:  # the track ended (MediaStreamError) before a frame
            if self.frame is not None and not self.frame.done():
                self.frame.set_exception(exc)
            return
        if self.frame is not None and not self.frame.done():
            self.frame.set_result(frame)

    async def gather(self, make: str) -> str:
        """createOffer/createAnswer + setLocalDescription (aiortc gathers there); the relay count."""
        description = await (self.pc.createOffer() if make == "offer" else self.pc.createAnswer())
        await self.pc.setLocalDescription(description)
        sdp: str = self.pc.localDescription.sdp
        relays = relay_candidates(sdp)
        if not relays:
            raise Failed(
                "ice_gather",
                f"0 relay candidates from turn:{self.host}:{self.spec['turn_port']} (relay-only ICE)",
            )
        emit(phase="ice_gather", s=self.since(), relay_candidates=len(relays))
        return sdp

    async def trickle(self, sdp: str) -> None:
        """Send our candidates one by one too, as a browser trickles them (they are also in the SDP)."""
        assert self.sig is not None
        for line in relay_candidates(sdp):
            await self.sig.candidate(line, "0", 0)

    async def run(self) -> None:
        from aiortc import RTCSessionDescription

        spec = self.spec
        self.sig = urs.client(spec["signaling"], self.host, spec["port"], spec["path"])
        try:
            await self.sig.open()
            await self.sig.connect(str(uuid.uuid4()))
        except (OSError, urs.SignalingError, asyncio.IncompleteReadError, ValueError) as exc:
            raise Failed(
                "signaling", f"{spec['signaling']} signaling at {self.host}:{spec['port']}: {_text(exc)}"
            ) from None
        emit(phase="signaling", s=self.since(), mode=spec["signaling"])

        self.pc = self.new_pc()
        self.pc.addTransceiver("video", direction="recvonly")
        offer_sdp = await self.gather("offer")
        await self.sig.offer(offer_sdp)
        await self.trickle(offer_sdp)

        pending: list[dict[str, Any]] = []
        answer_sdp, flow = await self._await_answer(pending)
        if flow == "renderer-offer":  # perfect negotiation: we are polite, so we take the renderer's offer
            await self.pc.close()
            self.pc = self.new_pc()
            await self.pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "offer"))
            local = await self.gather("answer")
            await self.sig.answer(local)
            await self.trickle(local)
            codec = video_codec(local)
        else:
            await self.pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))
            codec = video_codec(answer_sdp)
        emit(phase="answer", s=self.since(), flow=flow)
        for data in pending:
            await self._add_candidate(data)
        self.tasks.add(asyncio.ensure_future(self._candidates()))

        connected = ("completed", "connected")
        await self._until(lambda: self.pc.iceConnectionState in connected, "ice_connect", ICE_WAIT_S)
        emit(phase="ice_connect", s=self.since())
        await self._until(lambda: self.pc.connectionState == "connected", "dtls")
        emit(phase="dtls", s=self.since())

        assert self.frame is not None
        try:
            async with asyncio.timeout(min(spec["frame_timeout"], self.left())):
                frame = await self.frame
        except TimeoutError:
            raise Failed("first_frame", f"no video frame decoded within {spec['frame_timeout']:g}s") from None
        except Exception as exc:
            raise Failed("first_frame", f"the video track ended before a frame: {_text(exc)}") from None
        emit(phase="first_frame", s=self.since(), codec=codec, width=frame.width, height=frame.height)

    def left(self) -> float:
        return max(0.1, float(self.spec["timeout"]) - 0.5 - (time.monotonic() - self.t0))

    async def _await_answer(self, pending: list[dict[str, Any]]) -> tuple[str, str]:
        assert self.sig is not None
        wait = min(ANSWER_WAIT_S, self.left())
        try:
            async with asyncio.timeout(wait):
                while True:
                    kind, data = await self.sig.incoming.get()
                    if kind == "closed":
                        raise Failed("signaling", "the signaling server closed the connection")
                    if kind == "candidate":
                        pending.append(data)
                    elif kind in ("answer", "offer") and isinstance(data.get("sdp"), str):
                        return data["sdp"], "renderer-answer" if kind == "answer" else "renderer-offer"
        except TimeoutError:
            raise Failed("answer", f"no answer or offer from a renderer within {wait:.1f}s") from None

    async def _candidates(self) -> None:
        assert self.sig is not None
        while True:
            kind, data = await self.sig.incoming.get()
            if kind == "candidate":
                await self._add_candidate(data)

    async def _add_candidate(self, data: dict[str, Any]) -> None:
        from aiortc.sdp import candidate_from_sdp

        text = str(data.get("candidate", "")).removeprefix("candidate:").strip()
        if not text:
            return  # end-of-candidates
        with contextlib.suppress(ValueError, IndexError):
            candidate = candidate_from_sdp(text)
            candidate.sdpMid = data.get("sdpMid")
            candidate.sdpMLineIndex = data.get("sdpMLineIndex")
            await self.pc.addIceCandidate(candidate)

    async def _until(self, check: Any, phase: str, wait: float | None = None) -> None:
        budget = min(wait, self.left()) if wait is not None else self.left()
        deadline = time.monotonic() + budget
        while not check():
            if self.pc.iceConnectionState == "failed" or self.pc.connectionState == "failed":
                raise Failed(phase, f"{phase.replace('_', ' ')} failed (ICE {self.pc.iceConnectionState})")
            if time.monotonic() > deadline:
                raise Failed(phase, f"{phase.replace('_', ' ')} not done within {budget:.1f}s")
            await asyncio.sleep(POLL_S)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            if self.pc is not None:
                await self.pc.close()
        with contextlib.suppress(Exception):
            if self.sig is not None:
                await self.sig.close()


def _text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


async def main(request: dict[str, Any]) -> None:
    session = Session(request)
    try:
        async with asyncio.timeout(request["spec"]["timeout"]):
            await session.run()
        emit(ok=True)
    except Failed as exc:
        emit(failed=exc.phase, detail=exc.detail, hint=exc.hint)
    except TimeoutError:
        emit(failed="", detail=f"not done within the {request['spec']['timeout']:g}s timeout")
    finally:
        await session.close()


def entry() -> None:
    try:
        import aiortc  # noqa: F401
    except ImportError:
        emit(error=f"the webrtc probe needs aiortc: {EXTRA}")
        return
    asyncio.run(main(json.loads(sys.argv[1])))


if __name__ == "__main__":
    entry()
