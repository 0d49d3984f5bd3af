"""gRPC health: grpc.health.v1.Health/Check over cleartext HTTP/2 returns SERVING.

One unary call made with the small `h2` library (imported here only, and only when a gRPC probe
runs): grpcio would add ~10 MB to the long-running agent for this one request. HTTP/2 with prior
knowledge (h2c), as gRPC servers speak it without TLS. The two protobuf messages have one field
each, encoded and parsed by hand.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sparc_agent.probes.base import (
    PortSpec,
    ProbeResult,
    Target,
    TargetFailed,
    authority,
    close,
    measured,
    open_tcp,
)
from sparc_agent.probes.fields import Text

if TYPE_CHECKING:
    import asyncio

    import h2.connection

PATH = "/grpc.health.v1.Health/Check"
SERVING = 1
SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
GRPC_CODES = (  # index = code
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)  # fmt: skip
MAX_BODY = 16384  # a HealthCheckResponse is 2 bytes; anything near this is not one


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise TargetFailed("malformed protobuf varint")
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return result, pos


def encode_request(service: str) -> bytes:
    """HealthCheckRequest{service=1} in a gRPC length-prefixed frame (uncompressed)."""
    raw = service.encode()
    message = (b"\x0a" + _varint(len(raw)) + raw) if raw else b""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def decode_status(body: bytes) -> int:
    """HealthCheckResponse.status (field 1) from one gRPC frame; 0 (UNKNOWN) when absent, as proto3 says."""
    if len(body) < 5:
        raise TargetFailed("no gRPC message in the response")
    if body[0] != 0:
        raise TargetFailed("compressed gRPC response (we asked for none)")
    length = int.from_bytes(body[1:5], "big")
    if len(body) < 5 + length:
        raise TargetFailed(f"truncated gRPC message ({len(body) - 5} of {length} bytes)")
    message, pos, status = body[5 : 5 + length], 0, 0
    while pos < len(message):
        key, pos = _read_varint(message, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(message, pos)
            if field == 1:
                status = value  # the last one wins, as in protobuf
        elif wire == 2:
            size, pos = _read_varint(message, pos)
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise TargetFailed(f"unexpected protobuf wire type {wire}")
        if pos > len(message):
            raise TargetFailed("truncated protobuf field")
    return status


def grpc_timeout(seconds: float) -> str:
    """The grpc-timeout header: lets the server give up when we do (at most 8 digits)."""
    return f"{min(max(1, int(seconds * 1000)), 99_999_999)}m"


class _Call:
    """One unary call on one connection: send what flow control allows, collect the answer."""

    def __init__(self, conn: h2.connection.H2Connection, stream: int, request: bytes) -> None:
        self.conn, self.stream, self.pending = conn, stream, request
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.ended = False

    def pump(self) -> None:
        """Send as much of the request as the peer's window and frame size allow; END_STREAM with the last."""
        while self.pending and not self.ended:  # a server may answer (and end) before it read it all
            size = min(
                len(self.pending),
                self.conn.local_flow_control_window(self.stream),
                self.conn.max_outbound_frame_size,
            )
            if size <= 0:
                return  # wait for a WINDOW_UPDATE (or a SETTINGS raising the initial window)
            chunk, self.pending = self.pending[:size], self.pending[size:]
            self.conn.send_data(self.stream, chunk, end_stream=not self.pending)

    def feed(self, data: bytes) -> None:
        import h2.events
        import h2.exceptions

        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            raise TargetFailed(f"HTTP/2 protocol error: {type(exc).__name__}: {exc}") from None
        for event in events:
            if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                if event.stream_id == self.stream:
                    self.headers.update({_text(k): _text(v) for k, v in event.headers or []})
            elif isinstance(event, h2.events.DataReceived):
                # give the window back at once, so a server that sends more than 64 KiB is never stuck
                self.conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id or 0)
                if event.stream_id == self.stream:
                    self.body += event.data or b""
                    if len(self.body) > MAX_BODY:
                        raise TargetFailed(f"response body over {MAX_BODY} bytes")
            elif isinstance(event, h2.events.StreamReset) and event.stream_id == self.stream:
                raise TargetFailed(f"stream reset by the server (HTTP/2 error code {event.error_code})")
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == self.stream:
                self.ended = True
            elif isinstance(event, h2.events.ConnectionTerminated) and not self.ended:
                raise TargetFailed(
                    f"GOAWAY before the answer (HTTP/2 error code {event.error_code}"
                    + (f", {event.additional_data!r})" if event.additional_data else ")")
                )
            elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                self.pump()  # SETTINGS and PING are acknowledged by h2 itself; we only resume sending


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def verdict(headers: dict[str, str], body: bytes) -> str:
    if headers.get(":status") != "200":
        raise TargetFailed(f"HTTP/2 status {headers.get(':status', '(none)')}, not a gRPC answer")
    code = headers.get("grpc-status")
    if code is None:
        raise TargetFailed("no grpc-status in the answer (not a gRPC server?)")
    if code != "0":
        name = (
            GRPC_CODES[int(code)]
            if code.isascii() and code.isdigit() and int(code) < len(GRPC_CODES)
            else "?"
        )
        message = urllib.parse.unquote(headers.get("grpc-message", ""))  # percent-encoded on the wire
        raise TargetFailed(f"grpc-status {code} {name}" + (f": {message}" if message else ""))
    status = decode_status(bytes(body))
    if status != SERVING:
        raise TargetFailed(SERVING_STATUS.get(status, f"health status {status}"))
    return "SERVING"


async def _roundtrip(
    call: _Call, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes
) -> None:
    writer.write(first)
    await writer.drain()
    seen_any = False
    while not call.ended:
        data = await reader.read(65536)
        if not data:
            raise TargetFailed("connection closed before the gRPC answer ended")
        if not seen_any and data.startswith(b"HTTP/1."):
            first_line = data.split(b"\r\n", 1)[0][:40]
            raise TargetFailed(f"not HTTP/2: the server answered {first_line!r}")
        seen_any = True
        call.feed(data)
        if out := call.conn.data_to_send():
            writer.write(out)
            await writer.drain()


@dataclass(frozen=True)
class GrpcSpec(PortSpec):
    service: Text = ""


async def probe(spec: GrpcSpec, target: Target) -> ProbeResult:
    import h2.config
    import h2.connection
    import h2.exceptions

    async def check() -> str:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(
            stream,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", PATH),
                (":authority", authority(target.host, spec.port)),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("grpc-timeout", grpc_timeout(spec.timeout_s)),
                ("user-agent", "sparc-agent"),
            ],
        )
        call = _Call(conn, stream, encode_request(spec.service))
        call.pump()
        reader, writer = await open_tcp(target.host, spec.port)
        try:
            await _roundtrip(call, reader, writer, conn.data_to_send())
            with contextlib.suppress(h2.exceptions.ProtocolError):  # the server may have sent GOAWAY first
                conn.close_connection()  # a polite GOAWAY, so the server logs no broken connection
                writer.write(conn.data_to_send())
        finally:
            await close(writer)
        return verdict(call.headers, bytes(call.body))

    return await measured(check(), spec.timeout_s)
