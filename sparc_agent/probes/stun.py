"""STUN: a Binding Request over UDP gets a Binding Success Response with our transaction id (RFC 5389).

UDP loses datagrams, so the request is retransmitted with a doubling interval (RFC 5389 7.2.1) until
the probe's own timeout ends it. Datagrams that are not STUN or carry another transaction id are
ignored, as the RFC says a client must. The address the server saw us from goes into the detail.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import struct

from sparc_agent.probes.base import PortSpec, ProbeResult, Target, TargetFailed, measured

MAGIC = 0x2112A442
MAGIC_BYTES = MAGIC.to_bytes(4, "big")
BINDING_REQUEST, BINDING_SUCCESS, BINDING_ERROR = 0x0001, 0x0101, 0x0111
MAPPED_ADDRESS, XOR_MAPPED_ADDRESS, ERROR_CODE = 0x0001, 0x0020, 0x0009
HEADER = struct.Struct("!HHI12s")


class _Client(asyncio.DatagramProtocol):
    def __init__(self, tid: bytes) -> None:
        self.tid = tid
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        # a STUN message: top two bits zero, our magic cookie and our transaction id; else not ours
        ours = len(data) >= 20 and data[0] & 0xC0 == 0 and data[4:8] == MAGIC_BYTES and data[8:20] == self.tid
        if ours and not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable comes back as ConnectionRefusedError on the next receive: nothing listens
        if not self.answer.done():
            self.answer.set_exception(exc)


def attributes(body: bytes) -> dict[int, bytes]:
    """type -> value of the first attribute of each type (values are padded to 4 bytes on the wire)."""
    found: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(body):
        kind, length = struct.unpack_from("!HH", body, pos)
        found.setdefault(kind, body[pos + 4 : pos + 4 + length])
        pos += 4 + length + (-length % 4)
    return found


def decode_address(value: bytes, tid: bytes, xor: bool) -> str | None:
    """ip:port from a (XOR-)MAPPED-ADDRESS value; None when it is malformed."""
    if len(value) < 4:
        return None
    family, port = value[1], struct.unpack_from("!H", value, 2)[0]
    size = {1: 4, 2: 16}.get(family)
    if size is None or len(value) < 4 + size:
        return None
    raw = value[4 : 4 + size]
    if xor:
        port ^= MAGIC >> 16
        key = (MAGIC_BYTES + tid)[:size]
        raw = bytes(a ^ b for a, b in zip(raw, key, strict=True))
    ip = ipaddress.ip_address(raw)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def mapped(body: bytes, tid: bytes) -> str:
    attrs = attributes(body)
    if XOR_MAPPED_ADDRESS in attrs:
        return decode_address(attrs[XOR_MAPPED_ADDRESS], tid, xor=True) or "malformed XOR-MAPPED-ADDRESS"
    if MAPPED_ADDRESS in attrs:  # RFC 3489 servers
        return decode_address(attrs[MAPPED_ADDRESS], tid, xor=False) or "malformed MAPPED-ADDRESS"
    return "no mapped address"


def error_text(body: bytes) -> str:
    value = attributes(body).get(ERROR_CODE, b"")
    if len(value) < 4:
        return "Binding Error Response"
    code = (value[2] & 0x07) * 100 + value[3]
    reason = value[4:].decode("utf-8", "replace").strip()
    return f"Binding Error Response {code}" + (f" {reason}" if reason else "")


def first_wait(timeout_s: float) -> float:
    # RFC 5389 says RTO 500 ms for the Internet; a probe of a local port gets a few tries within its timeout
    return min(0.5, max(0.05, timeout_s / 8))


class StunSpec(PortSpec):
    """Healthy when a Binding Request is answered over UDP."""


async def probe(spec: StunSpec, target: Target) -> ProbeResult:
    async def check() -> str:
        tid = os.urandom(12)
        request = HEADER.pack(BINDING_REQUEST, 0, MAGIC, tid)
        loop = asyncio.get_running_loop()
        transport, client = await loop.create_datagram_endpoint(
            lambda: _Client(tid), remote_addr=(target.host, spec.port)
        )
        try:
            wait = first_wait(spec.timeout_s)
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
        body = data[20 : 20 + length]
        if kind == BINDING_ERROR:
            raise TargetFailed(error_text(body))
        if kind != BINDING_SUCCESS:
            raise TargetFailed(f"unexpected STUN message type {kind:#06x}")
        return "mapped " + mapped(body, tid)

    return await measured(check(), spec.timeout_s)
