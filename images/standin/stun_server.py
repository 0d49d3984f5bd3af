"""Stand-in for coturn: a STUN server (RFC 5389) on --listening-port (default 3478), UDP and TCP.
A Binding Request gets a Binding Success Response with XOR-MAPPED-ADDRESS and the same transaction
id. Other coturn arguments (-n, --min-port=…, --no-cli, …) are accepted and ignored."""

from __future__ import annotations

import socket
import socketserver
import struct
import sys
import threading

from standin import log, setup

NAME = "turn"
MAGIC = 0x2112A442
BINDING_REQUEST, BINDING_SUCCESS = 0x0001, 0x0101
XOR_MAPPED_ADDRESS, SOFTWARE = 0x0020, 0x8022


def listening_port(argv: list[str]) -> int:
    port = 3478
    for i, arg in enumerate(argv):
        if arg.startswith("--listening-port="):
            port = int(arg.split("=", 1)[1])
        elif arg in ("--listening-port", "-p") and i + 1 < len(argv):
            port = int(argv[i + 1])
    return port


def attr(kind: int, value: bytes) -> bytes:
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * pad


def answer(data: bytes, addr: tuple[str, int]) -> bytes | None:
    if len(data) < 20:
        return None
    kind, _length, cookie = struct.unpack("!HHI", data[:8])
    if kind != BINDING_REQUEST or cookie != MAGIC:
        return None
    txid = data[8:20]
    ip = struct.unpack("!I", socket.inet_aton(addr[0]))[0] ^ MAGIC
    xport = addr[1] ^ (MAGIC >> 16)
    attrs = attr(XOR_MAPPED_ADDRESS, struct.pack("!BBHI", 0, 1, xport, ip))
    attrs += attr(SOFTWARE, b"sparc-standin-stun")
    return struct.pack("!HHI", BINDING_SUCCESS, len(attrs), MAGIC) + txid + attrs


class UDPHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        reply = answer(data, self.client_address)
        if reply:
            sock.sendto(reply, self.client_address)


class TCPHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while len(head := self.rfile.read(20)) == 20:
            body = self.rfile.read(struct.unpack("!H", head[2:4])[0])
            reply = answer(head + body, self.client_address)
            if reply is None:
                return
            self.wfile.write(reply)


class UDPServer(socketserver.ThreadingUDPServer):
    allow_reuse_address = True
    daemon_threads = True


class TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main() -> None:
    setup(NAME)
    port = listening_port(sys.argv[1:])
    tcp = TCPServer(("0.0.0.0", port), TCPHandler)
    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    udp = UDPServer(("0.0.0.0", port), UDPHandler)
    log(NAME, f"STUN on :{port} udp+tcp (args: {' '.join(sys.argv[1:])})")
    udp.serve_forever()


if __name__ == "__main__":
    main()
