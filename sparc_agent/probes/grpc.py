"""gRPC health: grpc.health.v1.Health/Check over cleartext HTTP/2 returns SERVING.

One unary call made with the small `h2` library (imported here only): grpcio would add
~10 MB to the long-running agent for this one request. The protobuf messages are two
fields, encoded and parsed by hand.
"""

from __future__ import annotations

from typing import Any

from .base import ProbeResult, TargetFailed, close, measured, open_tcp
from .spec import GrpcSpec

PATH = "/grpc.health.v1.Health/Check"
SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


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
    """HealthCheckRequest{service=1} in a gRPC length-prefixed frame."""
    raw = service.encode()
    message = (b"\x0a" + _varint(len(raw)) + raw) if raw else b""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def decode_status(body: bytes) -> int:
    """HealthCheckResponse.status (field 1) from one gRPC frame; 0 when absent."""
    if len(body) < 5:
        raise TargetFailed("empty gRPC response")
    if body[0] != 0:
        raise TargetFailed("compressed gRPC response (not requested)")
    length = int.from_bytes(body[1:5], "big")
    message, pos, status = body[5 : 5 + length], 0, 0
    while pos < len(message):
        key, pos = _read_varint(message, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(message, pos)
            if field == 1:
                status = value
        elif wire == 2:
            size, pos = _read_varint(message, pos)
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise TargetFailed(f"unexpected protobuf wire type {wire}")
    return status


async def probe(spec: GrpcSpec, host: str) -> ProbeResult:
    import h2.config
    import h2.connection
    import h2.events

    async def check() -> str:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        reader, writer = await open_tcp(host, spec.port)
        headers: dict[str, Any] = {}
        body = b""
        try:
            conn.initiate_connection()
            stream = conn.get_next_available_stream_id()
            conn.send_headers(
                stream,
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", PATH),
                    (":authority", f"{host}:{spec.port}"),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                    ("user-agent", "sparc-agent"),
                ],
            )
            conn.send_data(stream, encode_request(spec.service), end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()
            ended = False
            while not ended:
                data = await reader.read(65536)
                if not data:
                    raise TargetFailed("connection closed before the gRPC response ended")
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                        headers.update({_text(k): _text(v) for k, v in event.headers or []})
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data or b""
                        conn.acknowledge_received_data(
                            event.flow_controlled_length or 0, event.stream_id or 0
                        )
                    elif isinstance(event, h2.events.StreamReset):
                        raise TargetFailed(f"stream reset (error code {event.error_code})")
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        raise TargetFailed(f"connection terminated (error code {event.error_code})")
                    elif isinstance(event, h2.events.StreamEnded):
                        ended = True
                writer.write(conn.data_to_send())
                await writer.drain()
        finally:
            await close(writer)
        if headers.get(":status") != "200":
            raise TargetFailed(f"HTTP/2 status {headers.get(':status')}")
        grpc_status = headers.get("grpc-status", "")
        if grpc_status != "0":
            raise TargetFailed(
                f"grpc-status {grpc_status or '(none)'}: {headers.get('grpc-message', '')}".strip()
            )
        status = decode_status(body)
        if status != 1:
            raise TargetFailed(SERVING_STATUS.get(status, f"status {status}"))
        return "SERVING"

    return await measured(check(), spec.timeout_s)
