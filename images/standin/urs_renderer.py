#!/usr/bin/env python3
"""Stand-in for a Unity Render Streaming renderer: registers with URS signaling as Unity does and
streams synthetic video over WebRTC (aiortc) to whoever offers to receive it.

    urs_renderer.py -signalingUrl ws://HOST:PORT [-signalingType websocket|http] [--mode MODE]

Modes: `answer` (the renderer answers the browser's offer), `re-offer` (it answers with its own
offer carrying the video track, as URS 3.1+ does with perfect negotiation), `no-frames` (it
negotiates, but its track never yields a frame). Its ICE uses host candidates only; the browser side
reaches it through TURN. Signaling is sparc_agent.probes.urs (the same client the probe uses).
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, "/srv")

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp
from av import VideoFrame

from sparc_agent.probes import urs

FPS = 15
TASKS: set[asyncio.Future[Any]] = set()  # held: the loop keeps only weak references


class Synthetic(MediaStreamTrack):
    """A moving gradient, 320x240; `frozen` never yields a frame (the no-frames fault)."""

    kind = "video"

    def __init__(self, frozen: bool) -> None:
        super().__init__()
        self.frozen, self.n, self.t0 = frozen, 0, time.monotonic()

    async def recv(self) -> VideoFrame:
        if self.frozen:
            await asyncio.Event().wait()
        self.n += 1
        await asyncio.sleep(max(0.0, self.t0 + self.n / FPS - time.monotonic()))
        frame = VideoFrame(width=320, height=240, format="yuv420p")
        for plane, value in zip(frame.planes, (16 + self.n % 200, 128, 128), strict=True):
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts, frame.time_base = self.n, fractions.Fraction(1, FPS)
        return frame


class Renderer:
    def __init__(self, sig: urs.Signaling, mode: str) -> None:
        self.sig, self.mode = sig, mode
        self.pcs: dict[str, RTCPeerConnection] = {}

    async def serve(self) -> None:
        while True:
            kind, data = await self.sig.incoming.get()
            if kind == "closed":
                raise SystemExit("signaling closed the connection")
            cid = str(data.get("connectionId") or self.sig.connection_id)
            try:
                await self.on_message(kind, cid, data)
            except Exception as exc:  # one bad peer must not end the renderer
                print(f"[renderer] {kind} for {cid}: {type(exc).__name__}: {exc}", flush=True)

    async def on_message(self, kind: str, cid: str, data: dict[str, Any]) -> None:
        self.sig.connection_id = cid
        if kind == "offer" and self.mode != "re-offer":
            pc = self.new_pc(cid)
            await pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "offer"))
            for t in pc.getTransceivers():
                if t.kind == "video":
                    t.direction = "sendonly"
                    t.sender.replaceTrack(Synthetic(self.mode == "no-frames"))
            await pc.setLocalDescription(await pc.createAnswer())
            await self.sig.answer(pc.localDescription.sdp)
        elif kind == "offer":  # perfect negotiation: the renderer sends its own offer with the track
            pc = self.new_pc(cid)
            pc.addTransceiver(Synthetic(False), direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            await self.sig.offer(pc.localDescription.sdp)
        elif kind == "answer" and cid in self.pcs:
            await self.pcs[cid].setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
        elif kind == "candidate" and cid in self.pcs:
            text = str(data.get("candidate", "")).removeprefix("candidate:").strip()
            if text:
                candidate = candidate_from_sdp(text)
                candidate.sdpMid, candidate.sdpMLineIndex = data.get("sdpMid"), data.get("sdpMLineIndex")
                await self.pcs[cid].addIceCandidate(candidate)

    def new_pc(self, cid: str) -> RTCPeerConnection:
        old = self.pcs.pop(cid, None)
        if old is not None:
            TASKS.add(asyncio.ensure_future(old.close()))
        pc = RTCPeerConnection()
        self.pcs[cid] = pc
        return pc


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-signalingUrl", default=os.environ.get("SIGNALING_URL", "ws://127.0.0.1:8080"))
    parser.add_argument("-signalingType", choices=("websocket", "http"), default="")
    parser.add_argument("--mode", choices=("answer", "re-offer", "no-frames"), default="answer")
    args, _ = parser.parse_known_args()
    url = urlsplit(args.signalingUrl)
    kind = args.signalingType or ("http" if url.scheme.startswith("http") else "websocket")
    sig = urs.client(kind, url.hostname or "127.0.0.1", url.port or 80, url.path or "/")
    sig.accept_all = True
    while True:  # as Unity does: keep trying until signaling is up
        try:
            await sig.open()
            break
        except (OSError, urs.SignalingError):
            await asyncio.sleep(0.2)
    if kind == "http":  # public mode: a session sees every other session's offers
        sig._task = asyncio.create_task(poll_offers(sig))
    print(f"[renderer] registered with {kind} signaling {args.signalingUrl}, mode {args.mode}", flush=True)
    await Renderer(sig, args.mode).serve()


async def poll_offers(sig: urs.Signaling) -> None:
    """HTTP public mode: new offers of other sessions, then our connection's answers and candidates."""
    assert isinstance(sig, urs.HttpSignaling)
    seen: set[str] = set()
    while True:
        reply = await sig._call("GET", "/offer?fromtime=0")
        for offer in reply.get("offers", []):
            cid = offer.get("connectionId")
            if cid and cid not in seen:
                seen.add(cid)
                sig.connection_id = cid
                await sig._call("PUT", "/connection", {"connectionId": cid})
                sig.incoming.put_nowait(("offer", offer))
                TASKS.add(asyncio.ensure_future(follow(sig, cid)))
        await asyncio.sleep(urs.POLL_S)


async def follow(sig: urs.HttpSignaling, cid: str) -> None:
    seen: set[str] = set()
    while True:
        for kind, key in (("answer", "answers"), ("candidate", "candidates")):
            reply = await sig._call("GET", f"/{kind}?fromtime=0")
            for item in reply.get(key, []):
                if item.get("connectionId") != cid:
                    continue
                for data in item.get("candidates", [item]) if kind == "candidate" else [item]:
                    mark = repr(sorted(data.items()))
                    if mark not in seen:
                        seen.add(mark)
                        sig.incoming.put_nowait((kind, {**data, "connectionId": cid}))
        await asyncio.sleep(urs.POLL_S)


if __name__ == "__main__":
    asyncio.run(main())
