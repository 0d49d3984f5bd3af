"""WebSocket: the HTTP/1.1 Upgrade answers 101 with the right Sec-WebSocket-Accept (RFC 6455)."""

from __future__ import annotations

import base64
import hashlib
import os

from .base import ProbeResult, TargetFailed, close, measured, open_tcp
from .spec import WebSocketSpec

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD = 8192


def accept_for(key: bytes) -> str:
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()


async def probe(spec: WebSocketSpec, host: str) -> ProbeResult:
    async def check() -> str:
        key = base64.b64encode(os.urandom(16))
        reader, writer = await open_tcp(host, spec.port)
        try:
            writer.write(
                f"GET {spec.path} HTTP/1.1\r\nHost: {host}:{spec.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
                "User-Agent: sparc-agent\r\n\r\n".encode()
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEAD:
                raise TargetFailed("response head too large")
            lines = head.decode("latin-1").split("\r\n")
            if not lines[0].startswith("HTTP/1.1 101"):
                raise TargetFailed(f"no upgrade: {lines[0][:60]!r}")
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
            }
            if headers.get("sec-websocket-accept") != accept_for(key):
                raise TargetFailed("wrong Sec-WebSocket-Accept")
            writer.write(b"\x88\x82" + _masked_close())  # a masked close frame, code 1000
            await writer.drain()
        finally:
            await close(writer)
        return "101 Switching Protocols"

    return await measured(check(), spec.timeout_s)


def _masked_close() -> bytes:
    mask = os.urandom(4)
    payload = (1000).to_bytes(2, "big")
    return mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
