"""Unity Render Streaming signaling, as its browser client speaks it (WebApp, 3.x), in both modes.

`-t websocket` (the default): JSON text frames. The client sends {"type": "connect", connectionId}
(answered with the same type and `polite`), then {"type": "offer"|"answer"|"candidate", "from": id,
"data": {..., "connectionId": id}}; the server relays the peer's as {"from": id, "type": ..., "data"}.
`-t http`: PUT /signaling creates a session (its id goes in a Session-Id header from then on), PUT
/signaling/connection creates a connection, POST /signaling/{offer,answer,candidate} sends, and GET
/signaling/{offer,answer,candidate}?fromtime=MS is polled for the peer's.

Both deliver the peer's messages for our connection id as ("offer"|"answer"|"candidate", data) on
`incoming`. Used by the webrtc probe's session (its own process) and by the stand-in renderer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
from typing import Any

from sparc_agent.probes.base import authority
from sparc_agent.probes.websocket import accept_for, parse_head

POLL_S = 0.1  # HTTP mode: how often the peer's messages are asked for
MAX_MESSAGE = 1 << 20


class SignalingError(Exception):
    """The signaling server refused, closed, or answered something that is not URS."""


class Signaling:
    """One client of URS signaling; `incoming` gets the peer's messages for `connection_id`."""

    def __init__(self, host: str, port: int, path: str = "/") -> None:
        self.host, self.port, self.path = host, port, path
        self.connection_id = ""
        self.accept_all = False  # a renderer takes every browser's messages, not one connection's
        self.incoming: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        raise NotImplementedError

    async def connect(self, connection_id: str) -> bool:
        """Create the connection; returns `polite` as the server says it."""
        raise NotImplementedError

    async def send(self, kind: str, data: dict[str, Any]) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def offer(self, sdp: str) -> None:
        await self.send("offer", {"sdp": sdp, "connectionId": self.connection_id})

    async def answer(self, sdp: str) -> None:
        await self.send("answer", {"sdp": sdp, "connectionId": self.connection_id})

    async def candidate(self, candidate: str, mid: str, mline: int) -> None:
        data = {
            "candidate": candidate,
            "sdpMid": mid,
            "sdpMLineIndex": mline,
            "connectionId": self.connection_id,
        }
        await self.send("candidate", data)

    def _deliver(self, kind: str, data: dict[str, Any]) -> None:
        if kind in ("offer", "answer", "candidate"):
            self.incoming.put_nowait((kind, data))


class WebSocketSignaling(Signaling):
    """URS `-t websocket`."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=MAX_MESSAGE)
        key = base64.b64encode(os.urandom(16))
        self.writer.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {authority(self.host, self.port)}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await self.writer.drain()
        status, headers = parse_head(await self.reader.readuntil(b"\r\n\r\n"))
        if status != 101 or headers.get("sec-websocket-accept") != accept_for(key):
            raise SignalingError(
                f"WebSocket upgrade refused (HTTP {status}): is it URS in -t websocket mode?"
            )
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task = asyncio.create_task(self._read())

    async def connect(self, connection_id: str) -> bool:
        self.connection_id = connection_id
        await self._send_json({"type": "connect", "connectionId": connection_id})
        while True:
            msg = await self._replies.get()
            if msg.get("type") == "error":
                raise SignalingError(str(msg.get("message", "error")))
            if msg.get("type") == "connect" and msg.get("connectionId") == connection_id:
                return bool(msg.get("polite", True))

    async def send(self, kind: str, data: dict[str, Any]) -> None:
        await self._send_json({"type": kind, "from": self.connection_id, "data": data})

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.connection_id:
                await self._send_json({"type": "disconnect", "connectionId": self.connection_id})
            self.writer.write(_frame(0x8, struct.pack("!H", 1000)))
            await self.writer.drain()
        await super().close()
        self.writer.close()

    async def _send_json(self, msg: dict[str, Any]) -> None:
        self.writer.write(_frame(0x1, json.dumps(msg).encode()))
        await self.writer.drain()

    async def _read(self) -> None:
        try:
            while True:
                opcode, data = await _read_frame(self.reader)
                if opcode == 0x8:
                    break
                if opcode == 0x9:
                    self.writer.write(_frame(0xA, data))
                elif opcode == 0x1:
                    self._on_message(json.loads(data))
        finally:
            self.incoming.put_nowait(("closed", {}))

    def _on_message(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        raw = msg.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if msg.get("type") in ("connect", "error", "disconnect") and "from" not in msg:
            self._replies.put_nowait(msg)
        elif self.accept_all and msg.get("from"):
            self._deliver(str(msg.get("type")), {**data, "connectionId": msg["from"]})
        elif msg.get("from") == self.connection_id or data.get("connectionId") == self.connection_id:
            self._deliver(str(msg.get("type")), data)


def _frame(opcode: int, payload: bytes) -> bytes:
    """A client frame: FIN, opcode, MASK bit, length, key, masked payload (RFC 6455 5.2)."""
    n, mask = len(payload), os.urandom(4)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One (unfragmented) frame from the server; server frames are not masked."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    if n > MAX_MESSAGE:
        raise SignalingError(f"a {n}-byte message")
    mask = await reader.readexactly(4) if b1 & 0x80 else b""
    data = await reader.readexactly(n)
    if mask:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return b0 & 0x0F, data


class HttpSignaling(Signaling):
    """URS `-t http`: REST calls with a Session-Id header, the peer's messages polled."""

    session_id = ""

    async def open(self) -> None:
        reply = await self._call("PUT", "")
        self.session_id = str(reply.get("sessionId", ""))
        if not self.session_id:
            raise SignalingError("PUT /signaling gave no sessionId: is it URS in -t http mode?")

    async def connect(self, connection_id: str) -> bool:
        self.connection_id = connection_id
        reply = await self._call("PUT", "/connection", {"connectionId": connection_id})
        self._task = asyncio.create_task(self._poll())
        return bool(reply.get("polite", True))

    async def send(self, kind: str, data: dict[str, Any]) -> None:
        await self._call("POST", f"/{kind}", data)

    async def close(self) -> None:
        await super().close()
        with contextlib.suppress(Exception):
            if self.connection_id:
                await self._call("DELETE", "/connection", {"connectionId": self.connection_id})
            await self._call("DELETE", "")

    async def _poll(self) -> None:
        seen: set[str] = set()
        while True:
            for kind, key in (("answer", "answers"), ("offer", "offers"), ("candidate", "candidates")):
                reply = await self._call("GET", f"/{kind}?fromtime=0")
                for item in reply.get(key, []):
                    if not isinstance(item, dict) or item.get("connectionId") != self.connection_id:
                        continue
                    for data in item.get("candidates", [item]) if kind == "candidate" else [item]:
                        mark = json.dumps([kind, data], sort_keys=True)
                        if mark not in seen:
                            seen.add(mark)
                            self._deliver(kind, data)
            await asyncio.sleep(POLL_S)

    async def _call(self, method: str, sub: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        base = self.path.rstrip("/") + "/signaling"
        payload = json.dumps(body).encode() if body is not None else b""
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_MESSAGE)
        try:
            writer.write(
                f"{method} {base}{sub} HTTP/1.1\r\nHost: {authority(self.host, self.port)}\r\n"
                f"Session-Id: {self.session_id}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            status, headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
            length = int(headers.get("content-length", "-1"))
            raw = await (reader.readexactly(length) if length >= 0 else reader.read(MAX_MESSAGE))
        finally:
            writer.close()
        if status != 200:
            raise SignalingError(f"{method} {base}{sub}: HTTP {status}")
        try:
            reply = json.loads(raw) if raw.strip() and raw.strip() != b"OK" else {}
        except ValueError:
            return {}
        return reply if isinstance(reply, dict) else {}


def client(mode: str, host: str, port: int, path: str) -> Signaling:
    return HttpSignaling(host, port, path) if mode == "http" else WebSocketSignaling(host, port, path)
