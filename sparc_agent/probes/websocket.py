"""WebSocket: the HTTP/1.1 Upgrade answers 101 with the right Sec-WebSocket-Accept (RFC 6455 4.1).

A server that answers 200 (a plain web page where the signaling socket should be) is FAILED, as is
one that echoes a wrong accept key (a proxy that mangles the handshake). Afterwards we send a
masked close frame, as a client must, so the server sees a clean goodbye.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

from sparc_agent.probes.base import (
    PortSpec,
    ProbeResult,
    Target,
    TargetFailed,
    close,
    measured,
    open_tcp,
    read_until,
)
from sparc_agent.probes.fields import HttpPath
from sparc_agent.probes.http import MAX_HEAD, get_request, parse_status_line

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLOSE_NORMAL = 1000


def accept_for(key: bytes) -> str:
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status and headers (lower-case names; repeated headers joined with ", ")."""
    first, _, rest = head.partition(b"\n")
    status = parse_status_line(first + b"\n")
    headers: dict[str, str] = {}
    for raw in rest.decode("latin-1").splitlines():
        name, colon, value = raw.partition(":")
        if colon:
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return status, headers


def close_frame(code: int = CLOSE_NORMAL) -> bytes:
    """FIN + opcode 8, MASK bit + length 2, masking key, masked status code (clients must mask)."""
    mask = os.urandom(4)
    payload = code.to_bytes(2, "big")
    return b"\x88\x82" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@dataclass(frozen=True)
class WebSocketSpec(PortSpec):
    path: HttpPath = "/"


async def probe(spec: WebSocketSpec, target: Target) -> ProbeResult:
    async def check() -> str:
        key = base64.b64encode(os.urandom(16))
        upgrade = f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
        request = get_request(spec.path, target, spec.port, upgrade + "Sec-WebSocket-Version: 13\r\n")
        reader, writer = await open_tcp(target.host, spec.port, limit=MAX_HEAD)
        try:
            writer.write(request)
            await writer.drain()
            # "\n\n" would do for a sloppy server, but RFC 6455 servers are HTTP/1.1 and end heads with CRLF
            status, headers = parse_head(await read_until(reader, b"\r\n\r\n"))
            if status != 101:
                raise TargetFailed(f"HTTP {status}, not 101 Switching Protocols")
            if headers.get("upgrade", "").lower() != "websocket":
                raise TargetFailed(f"101 without Upgrade: websocket (got {headers.get('upgrade')!r})")
            if "upgrade" not in {t.strip().lower() for t in headers.get("connection", "").split(",")}:
                raise TargetFailed("101 without Connection: Upgrade")
            if headers.get("sec-websocket-accept") != accept_for(key):
                raise TargetFailed("wrong Sec-WebSocket-Accept")
            writer.write(close_frame())
            await writer.drain()
        finally:
            await close(writer)
        return "101 Switching Protocols"

    return await measured(check(), spec.timeout_s)
