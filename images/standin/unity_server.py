#!/usr/bin/python3
"""Stand-in for the SPARC Unity renderer, installed as /opt/sparc/SPARC-P.x86_64 so that
`pgrep -f SPARC-P.x86_64` finds it. It keeps a WebSocket open to -signalingUrl URL (as Unity Render
Streaming takes it; else SIGNALING_URL) (ws://host:port/path),
reconnecting when it drops, and exits 1 when it could not reach the signaling server for
UNITY_CONNECT_TIMEOUT seconds (default 30)."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import sys
import time
from urllib.parse import urlsplit

sys.path.insert(0, "/srv")
from standin import log, setup

NAME = "unity"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def connect(url: str) -> socket.socket:
    """Open a WebSocket (handshake checked, including Sec-WebSocket-Accept); raise OSError on failure."""
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or 80
    sock = socket.create_connection((host, port), timeout=2)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("connection closed during handshake")
        reply += chunk
    want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest())
    if not reply.startswith(b"HTTP/1.1 101") or want not in reply:
        sock.close()
        raise OSError(f"bad handshake: {reply[:40]!r}")
    return sock


def ping(sock: socket.socket) -> None:
    # a masked ping frame (clients must mask); any answer or none is fine, a dead peer raises
    sock.sendall(b"\x89\x80" + os.urandom(4))
    sock.settimeout(5)
    if not sock.recv(64):
        raise OSError("signaling closed the connection")


def main() -> None:
    setup(NAME)
    # Unity Render Streaming takes the URL from -signalingUrl (the env variable is the old stand-in's)
    args = sys.argv[1:]
    given = args[args.index("-signalingUrl") + 1] if "-signalingUrl" in args[:-1] else None
    url = given or os.environ.get("SIGNALING_URL", "ws://localhost:8080")
    limit = float(os.environ.get("UNITY_CONNECT_TIMEOUT", "30"))
    last_ok = time.monotonic()
    log(NAME, f"renderer up, signaling {url}, gives up after {limit}s unreachable")
    while True:
        try:
            sock = connect(url)
            log(NAME, "connected to signaling")
            while True:
                ping(sock)
                last_ok = time.monotonic()
                time.sleep(2)
        except OSError as exc:
            if time.monotonic() - last_ok > limit:
                log(NAME, f"signaling unreachable for {limit}s ({exc}): exiting")
                sys.exit(1)
            time.sleep(1)


if __name__ == "__main__":
    main()
