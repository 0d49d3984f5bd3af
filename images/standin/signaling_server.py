#!/usr/bin/python3
"""Stand-in for the SPARC signaling server, installed as `node` so the example's command
`node server.js --httpPort 8080` starts it (and as `riva-websocket-gateway --port=8080` for the v1
backend's WebSocket bridge). WebSocket (RFC 6455) on --httpPort: a GET with
`Upgrade: websocket` gets 101 + the correct Sec-WebSocket-Accept; text/binary frames are echoed,
pings answered. A plain GET gets 200 (so an HTTP probe works too)."""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import socketserver
import struct
import sys

sys.path.insert(0, "/srv")
from standin import log, setup

NAME = "signaling"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def read_frame(rfile) -> tuple[int, bytes] | None:  # type: ignore[no-untyped-def]
    head = rfile.read(2)
    if len(head) < 2:
        return None
    opcode, length = head[0] & 0x0F, head[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", rfile.read(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", rfile.read(8))[0]
    mask = rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(rfile.read(length)))
    return opcode, data


def frame(opcode: int, data: bytes) -> bytes:
    n = len(data)
    if n < 126:
        hdr = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        hdr = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        hdr = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return hdr + data


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        request = self.rfile.readline(8192).decode("latin-1").strip()
        headers: dict[str, str] = {}
        while True:
            line = self.rfile.readline(8192).decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if not request.startswith("GET "):
            self._plain(405, "method not allowed")
            return
        key = headers.get("sec-websocket-key")
        if headers.get("upgrade", "").lower() != "websocket" or not key:
            self._plain(200, "signaling stand-in: use a WebSocket")
            return
        self.wfile.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
        )
        log(NAME, f"websocket open from {self.client_address[0]}")
        while (msg := read_frame(self.rfile)) is not None:
            opcode, data = msg
            if opcode == 0x8:  # close: echo it and stop
                self.wfile.write(frame(0x8, data[:2]))
                break
            if opcode == 0x9:  # ping
                self.wfile.write(frame(0xA, data))
            elif opcode in (0x1, 0x2):  # echo text/binary
                self.wfile.write(frame(opcode, data))
        log(NAME, f"websocket closed from {self.client_address[0]}")

    def _plain(self, code: int, text: str) -> None:
        body = (text + "\n").encode()
        self.wfile.write(
            f"HTTP/1.1 {code} X\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + body
        )


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main() -> None:
    parser = argparse.ArgumentParser(prog=os.path.basename(sys.argv[0]))
    parser.add_argument("script", nargs="?", help="ignored (server.js)")
    # --httpPort: the signaling server's flag; --port: riva-websocket-gateway's (the bridge stand-in)
    parser.add_argument(
        "--httpPort", "--port", dest="port", type=int, default=int(os.environ.get("HTTP_PORT", "8080"))
    )
    args, unknown = parser.parse_known_args()
    setup(NAME)
    server = Server(("0.0.0.0", args.port), Handler)
    log(NAME, f"WebSocket on :{args.port} (script={args.script}, ignored args={unknown})")
    server.serve_forever()


if __name__ == "__main__":
    main()
