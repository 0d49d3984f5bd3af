"""STUN: a Binding Request over UDP gets a Binding Success Response with our transaction id (RFC 5389)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import struct

from .base import ProbeResult, TargetFailed, measured
from .spec import StunSpec

MAGIC = 0x2112A442
BINDING_REQUEST, BINDING_SUCCESS, BINDING_ERROR = 0x0001, 0x0101, 0x0111
XOR_MAPPED_ADDRESS = 0x0020


class _Client(asyncio.DatagramProtocol):
    def __init__(self, tid: bytes) -> None:
        self.tid = tid
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if len(data) >= 20 and data[8:20] == self.tid and not self.answer.done():
            self.answer.set_result(data)  # datagrams for other transactions are ignored

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


def xor_mapped(body: bytes, tid: bytes) -> str:
    pos = 0
    while pos + 4 <= len(body):
        kind, length = struct.unpack_from("!HH", body, pos)
        value = body[pos + 4 : pos + 4 + length]
        if kind == XOR_MAPPED_ADDRESS and len(value) >= 8:
            port = struct.unpack_from("!H", value, 2)[0] ^ (MAGIC >> 16)
            if value[1] == 1:
                raw = bytes(a ^ b for a, b in zip(value[4:8], MAGIC.to_bytes(4, "big"), strict=True))
            else:
                key = MAGIC.to_bytes(4, "big") + tid
                raw = bytes(a ^ b for a, b in zip(value[4:20], key, strict=True))
            return f"{ipaddress.ip_address(raw)}:{port}"
        pos += 4 + length + (-length % 4)
    return "no XOR-MAPPED-ADDRESS"


async def probe(spec: StunSpec, host: str) -> ProbeResult:
    async def check() -> str:
        tid = os.urandom(12)
        request = struct.pack("!HHI", BINDING_REQUEST, 0, MAGIC) + tid
        loop = asyncio.get_running_loop()
        transport, client = await loop.create_datagram_endpoint(
            lambda: _Client(tid), remote_addr=(host, spec.port)
        )
        try:
            wait = 0.1  # retransmit, doubling, until the probe's own timeout ends it
            while True:
                transport.sendto(request)
                done, _ = await asyncio.wait({client.answer}, timeout=wait)
                if done:
                    break
                wait = min(wait * 2, 1.6)
            data = client.answer.result()
        finally:
            transport.close()
        kind, length = struct.unpack_from("!HH", data, 0)
        if kind == BINDING_ERROR:
            raise TargetFailed("Binding Error Response")
        if kind != BINDING_SUCCESS:
            raise TargetFailed(f"unexpected STUN message type {kind:#06x}")
        return "mapped " + xor_mapped(data[20 : 20 + length], tid)

    return await measured(check(), spec.timeout_s)
