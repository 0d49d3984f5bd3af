"""Every probe kind against real servers on 127.0.0.1: healthy, wrong answer, closed port, hung.

The servers are small asyncio servers written here (plus a real grpcio server when grpcio is
installed, to prove the hand-made HTTP/2 call interoperates); `podman` is a fake script on PATH.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import stat
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from support.testhost import unavailable

from sparc_agent.probes import (
    ExecSpec,
    GrpcSpec,
    HttpSpec,
    ProbeOutcome,
    ProbeResult,
    StunSpec,
    TcpSpec,
    WebSocketSpec,
    run_probe,
)
from sparc_agent.probes import grpc as grpc_probe
from sparc_agent.probes import http as http_probe
from sparc_agent.probes import stun as stun_probe

pytestmark = pytest.mark.unit

T = TypeVar("T")
HANG_TIMEOUT = 0.3  # probes against hung servers; the test asserts the probe returns near it
SLACK = 0.4

OK, FAILED, ERROR = ProbeOutcome.OK, ProbeOutcome.FAILED, ProbeOutcome.ERROR


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def closed_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def tcp_server(handler: Handler) -> AsyncIterator[int]:
    tasks: set[asyncio.Task[None]] = set()

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the probe hung up (expected in the failure cases), or teardown gave up on us
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        if tasks:  # let handlers see what the probe sent last (a close frame, a GOAWAY)
            await asyncio.wait(tasks, timeout=1.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read everything, answer nothing, until the probe gives up and hangs up."""
    while await reader.read(65536):
        pass


async def probe_hung(spec_for: Callable[[int], Any]) -> tuple[ProbeResult, float]:
    async with tcp_server(hang) as port:
        t0 = time.monotonic()
        result = await run_probe(spec_for(port))
        return result, time.monotonic() - t0


def assert_timed_out(result: ProbeResult, elapsed: float) -> None:
    assert result.outcome is FAILED, result
    assert result.detail == f"timed out after {HANG_TIMEOUT:g}s"
    assert HANG_TIMEOUT - 0.01 <= elapsed < HANG_TIMEOUT + SLACK
    assert HANG_TIMEOUT - 0.01 <= result.latency_s < HANG_TIMEOUT + SLACK


# ------------------------------------------------------------------------------------------- tcp


def test_tcp_ok() -> None:
    async def main() -> ProbeResult:
        async with tcp_server(hang) as port:
            return await run_probe(TcpSpec(port=port))

    result = run(main())
    assert result.outcome is OK and result.ok and result.detail == "connected"
    assert 0 <= result.latency_s < 1


def test_tcp_closed_port_fails_with_errno_text() -> None:
    result = run(run_probe(TcpSpec(port=closed_port())))
    assert result.outcome is FAILED and result.detail == "Connection refused"


def test_tcp_hung_listener_times_out() -> None:
    # a listener that never accepts, with its backlog full: the kernel drops our SYN, connect hangs
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            t0 = time.monotonic()
            result = run(run_probe(TcpSpec(port=port, timeout_s=HANG_TIMEOUT)))
            assert_timed_out(result, time.monotonic() - t0)


# ------------------------------------------------------------------------------------------ http


def http_answer(head: bytes, seen: list[bytes] | None = None) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        if seen is not None:
            seen.append(request)
        writer.write(head)
        await writer.drain()

    return handler


def probe_http(handler: Handler, **spec: Any) -> ProbeResult:
    async def main() -> ProbeResult:
        async with tcp_server(handler) as port:
            return await run_probe(HttpSpec(port=port, **spec))

    return run(main())


def test_http_ok_and_request_shape() -> None:
    seen: list[bytes] = []
    result = probe_http(http_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", seen), path="/healthz")
    assert result.outcome is OK and result.detail == "HTTP 200"
    (request,) = seen
    lines = request.decode().split("\r\n")
    assert lines[0] == "GET /healthz HTTP/1.1"
    assert any(line.startswith("Host: 127.0.0.1:") for line in lines)
    assert "Connection: close" in lines


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.0 200 OK\r\n\r\n",  # HTTP/1.0 server
        b"HTTP/1.1 204\r\n\r\n",  # no reason phrase
        b"HTTP/1.1 200 OK\n\n",  # bare LF
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",  # interim head first
    ],
)
def test_http_status_line_variants(head: bytes) -> None:
    assert probe_http(http_answer(head)).outcome is OK


def test_http_redirect_is_not_followed() -> None:
    seen: list[bytes] = []
    result = probe_http(http_answer(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\n\r\n", seen))
    assert result.outcome is OK and result.detail == "HTTP 302"  # in 200..399; port 1 never tried
    assert len(seen) == 1


def test_http_500_fails() -> None:
    result = probe_http(http_answer(b"HTTP/1.1 500 Internal Server Error\r\n\r\n"))
    assert result.outcome is FAILED and result.detail == "HTTP 500 (want 200-399)"


def test_http_status_range_is_inclusive() -> None:
    assert probe_http(http_answer(b"HTTP/1.1 204 No Content\r\n\r\n"), status=(204, 204)).outcome is OK
    result = probe_http(http_answer(b"HTTP/1.1 200 OK\r\n\r\n"), status=(204, 204))
    assert result.outcome is FAILED and "want 204-204" in result.detail


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",  # not HTTP at all
        b"HTTP/1.1 2000 OK\r\n\r\n",  # four digits
        b"HTTP/1.1 200 OK",  # closed before the line ended
        b"",  # closed without a word
        b"HTTP/1.1 200 " + b"x" * 100_000,  # an endless status line: capped, not buffered
    ],
)
def test_http_garbage_fails_not_errors(answer: bytes) -> None:
    result = probe_http(http_answer(answer))
    assert result.outcome is FAILED, result


def test_http_closed_port() -> None:
    result = run(run_probe(HttpSpec(port=closed_port())))
    assert result.outcome is FAILED and result.detail == "Connection refused"


def test_http_hung_server_times_out() -> None:
    assert_timed_out(*run(probe_hung(lambda port: HttpSpec(port=port, timeout_s=HANG_TIMEOUT))))


def test_http_bad_path_is_our_error() -> None:
    result = probe_http(http_answer(b"HTTP/1.1 200 OK\r\n\r\n"), path="/x HTTP/1.1\r\nX-Evil: 1")
    assert result.outcome is ERROR and "bad probe path" in result.detail


# ------------------------------------------------------------------------------------- websocket

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_server(mode: str, got_close: list[bytes] | None = None) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in head.split("\r\n")[1:])}
        assert head.startswith("GET /signal HTTP/1.1\r\n")
        assert headers["upgrade"] == "websocket" and headers["connection"] == "Upgrade"
        assert headers["sec-websocket-version"] == "13"
        key = headers["sec-websocket-key"]
        assert len(base64.b64decode(key)) == 16
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        if mode == "wrong-accept":
            accept = base64.b64encode(hashlib.sha1(b"x" + GUID).digest()).decode()
        if mode == "plain-200":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 0\r\n\r\n")
        else:
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
            )
        await writer.drain()
        if got_close is not None:
            got_close.append(await reader.readexactly(8))

    return handler


def probe_ws(handler: Handler) -> ProbeResult:
    async def main() -> ProbeResult:
        async with tcp_server(handler) as port:
            return await run_probe(WebSocketSpec(port=port, path="/signal"))

    return run(main())


def test_websocket_ok_then_masked_close_frame() -> None:
    frames: list[bytes] = []
    result = probe_ws(ws_server("ok", frames))
    assert result.outcome is OK and result.detail == "101 Switching Protocols"
    (frame,) = frames
    assert frame[0] == 0x88  # FIN, close
    assert frame[1] == 0x82  # masked, 2 bytes of payload
    mask, payload = frame[2:6], frame[6:8]
    assert struct.unpack("!H", bytes(b ^ mask[i] for i, b in enumerate(payload)))[0] == 1000


def test_websocket_200_without_upgrade_fails() -> None:
    result = probe_ws(ws_server("plain-200"))
    assert result.outcome is FAILED and result.detail == "HTTP 200, not 101 Switching Protocols"


def test_websocket_wrong_accept_fails() -> None:
    result = probe_ws(ws_server("wrong-accept"))
    assert result.outcome is FAILED and result.detail == "wrong Sec-WebSocket-Accept"


def test_websocket_101_without_upgrade_header_fails() -> None:
    result = probe_ws(http_answer(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n"))
    assert result.outcome is FAILED and "Upgrade: websocket" in result.detail


def test_websocket_closed_port() -> None:
    result = run(run_probe(WebSocketSpec(port=closed_port())))
    assert result.outcome is FAILED and result.detail == "Connection refused"


def test_websocket_hung_server_times_out() -> None:
    assert_timed_out(*run(probe_hung(lambda port: WebSocketSpec(port=port, timeout_s=HANG_TIMEOUT))))


# ------------------------------------------------------------------------------------------ grpc


def health_response(status: int) -> bytes:
    return b"\x08" + bytes([status]) if status else b""  # proto3: the default (0) is not sent


def service_of(message: bytes) -> str:
    """HealthCheckRequest.service, the server's way: field 1, a varint length, the bytes."""
    if not message:
        return ""
    assert message[0] == 0x0A
    length, shift, pos = 0, 0, 1
    while True:
        length |= (message[pos] & 0x7F) << shift
        shift, pos = shift + 7, pos + 1
        if not message[pos - 1] & 0x80:
            break
    assert len(message) == pos + length
    return message[pos:].decode()


def h2_server(mode: str, seen: dict[str, Any] | None = None) -> Handler:
    """A hand-rolled gRPC server on h2; `mode` picks how it answers."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        body = b""
        headers: dict[str, str] = {}
        held: list[int] = []
        while data := await reader.read(65536):
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                return  # e.g. the client's SETTINGS ack after our GOAWAY: this server is done
            for event in events:
                if isinstance(event, h2.events.RequestReceived):
                    headers = dict(event.headers or [])  # type: ignore[arg-type]
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data or b""
                    conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id or 0)
                elif isinstance(event, h2.events.PingAckReceived) and held:
                    if seen is not None:
                        seen["ping_acked"] = True
                    await respond(conn, writer, held.pop(), "serving")
                elif isinstance(event, h2.events.StreamEnded):
                    if seen is not None:
                        seen.update(headers=headers, service=service_of(body[5:]), length=len(body))
                    if mode == "ping-first":  # answer only once the client has acknowledged a PING
                        conn.ping(b"12345678")
                        held.append(event.stream_id or 0)
                    else:
                        await respond(conn, writer, event.stream_id or 0, mode)
            writer.write(conn.data_to_send())
            await writer.drain()

    async def respond(conn: Any, writer: asyncio.StreamWriter, sid: int, mode: str) -> None:
        ok = [(":status", "200"), ("content-type", "application/grpc")]
        if mode == "hang":
            pass  # the handler goes on reading until the probe gives up
        elif mode == "unimplemented":  # trailers-only, as a server without the Health service answers
            conn.send_headers(
                sid, [*ok, ("grpc-status", "12"), ("grpc-message", "Method%20not%20found")], end_stream=True
            )
        elif mode == "http-404":
            conn.send_headers(sid, [(":status", "404")], end_stream=True)
        elif mode == "rst":
            conn.reset_stream(sid, error_code=2)
        elif mode == "goaway":
            conn.close_connection(error_code=11, additional_data=b"calm down")
        elif mode == "no-grpc-status":
            conn.send_headers(sid, ok)
            conn.send_data(sid, b"\x00\x00\x00\x00\x02\x08\x01", end_stream=True)
        elif mode == "huge-body":
            conn.send_headers(sid, ok)
            for _ in range(3):
                conn.send_data(sid, b"\x00" * 8000)
        else:
            status = {"serving": 1, "not-serving": 2, "unknown": 0}[mode]
            message = health_response(status)
            frame = b"\x00" + len(message).to_bytes(4, "big") + message
            conn.send_headers(sid, ok)
            for i in range(len(frame)):  # one byte a DATA frame: the client must reassemble
                conn.send_data(sid, frame[i : i + 1])
            conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)

    return handler


def probe_grpc_h2(mode: str, seen: dict[str, Any] | None = None, **spec: Any) -> ProbeResult:
    async def main() -> ProbeResult:
        async with tcp_server(h2_server(mode, seen)) as port:
            return await run_probe(GrpcSpec(port=port, **spec))

    return run(main())


def test_grpc_h2_serving_and_request_shape() -> None:
    seen: dict[str, Any] = {}
    result = probe_grpc_h2("serving", seen, service="riva")
    assert result.outcome is OK and result.detail == "SERVING"
    headers = seen["headers"]
    assert headers[":method"] == "POST" and headers[":path"] == "/grpc.health.v1.Health/Check"
    assert headers["content-type"] == "application/grpc" and headers["te"] == "trailers"
    assert seen["service"] == "riva"


def test_grpc_h2_answers_a_ping_while_waiting() -> None:
    seen: dict[str, Any] = {}
    assert probe_grpc_h2("ping-first", seen).outcome is OK
    assert seen.get("ping_acked") is True


def test_grpc_h2_request_larger_than_the_window_waits_for_window_updates() -> None:
    # 100 kB of service name: more than the 65535-byte initial window, so the client must pump
    seen: dict[str, Any] = {}
    result = probe_grpc_h2("serving", seen, service="s" * 100_000)
    assert result.outcome is OK
    assert seen["service"] == "s" * 100_000


@pytest.mark.parametrize(
    ("mode", "detail"),
    [
        ("not-serving", "NOT_SERVING"),
        ("unknown", "UNKNOWN"),
        ("unimplemented", "grpc-status 12 UNIMPLEMENTED: Method not found"),
        ("http-404", "HTTP/2 status 404, not a gRPC answer"),
        ("rst", "stream reset by the server (HTTP/2 error code 2)"),
        ("goaway", "GOAWAY before the answer (HTTP/2 error code 11, b'calm down')"),
        ("no-grpc-status", "no grpc-status in the answer (not a gRPC server?)"),
        ("huge-body", "response body over 16384 bytes"),
    ],
)
def test_grpc_h2_wrong_answers_fail(mode: str, detail: str) -> None:
    result = probe_grpc_h2(mode)
    assert result.outcome is FAILED, result
    assert result.detail == detail


def test_grpc_against_http1_server_fails() -> None:
    result = probe_grpc_h2_http1()
    assert result.outcome is FAILED and result.detail.startswith("not HTTP/2")


def probe_grpc_h2_http1() -> ProbeResult:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async def main() -> ProbeResult:
        async with tcp_server(answer) as port:
            return await run_probe(GrpcSpec(port=port))

    return run(main())


def test_grpc_closed_port() -> None:
    result = run(run_probe(GrpcSpec(port=closed_port())))
    assert result.outcome is FAILED and result.detail == "Connection refused"


def test_grpc_hung_server_times_out() -> None:
    assert_timed_out(*run(probe_hung(lambda port: GrpcSpec(port=port, timeout_s=HANG_TIMEOUT))))

    async def main() -> tuple[ProbeResult, float]:  # speaks HTTP/2, then never answers the call
        async with tcp_server(h2_server("hang")) as port:
            t0 = time.monotonic()
            return await run_probe(GrpcSpec(port=port, timeout_s=HANG_TIMEOUT)), time.monotonic() - t0

    assert_timed_out(*run(main()))


def test_grpc_message_codec() -> None:
    assert grpc_probe.encode_request("") == b"\x00\x00\x00\x00\x00"
    assert grpc_probe.encode_request("ab") == b"\x00\x00\x00\x00\x04\x0a\x02ab"
    long = grpc_probe.encode_request("x" * 300)  # a two-byte varint length
    assert long[5:8] == b"\x0a\xac\x02"
    frame = b"\x00\x00\x00\x00\x0c" + b"\x12\x03abc" + b"\x1d\x00\x00\x00\x00" + b"\x08\x01"
    assert grpc_probe.decode_status(frame) == 1  # unknown fields of every wire type skipped
    with pytest.raises(grpc_probe.TargetFailed):
        grpc_probe.decode_status(b"\x00\x00\x00\x00\x05\x08")  # truncated
    with pytest.raises(grpc_probe.TargetFailed):
        grpc_probe.decode_status(b"\x00\x00\x00\x00\x01\x08")  # varint cut off
    with pytest.raises(grpc_probe.TargetFailed):
        grpc_probe.decode_status(b"\x01\x00\x00\x00\x02\x08\x01")  # compressed


def test_grpc_module_imports_h2_lazily() -> None:
    code = (
        "import sys, sparc_agent.probes as p; "
        "assert not any(m == 'h2' or m.startswith('h2.') for m in sys.modules), 'h2 imported eagerly'"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


# ---- against a real grpcio server: does the hand-made call interoperate?


@pytest.fixture(scope="module")
def grpcio_port() -> Iterator[tuple[int, int]]:
    """(port with a Health service, port with no services at all)"""
    try:
        import grpc
    except ImportError:
        unavailable("grpcio not installed (pip install '.[test]')")

    def check(request: bytes, context: Any) -> bytes:
        service = service_of(request)
        if service in ("", "riva", "s" * 100_000):
            return health_response(1)
        if service == "asr":
            return health_response(2)
        context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service: {service} 100%")
        raise AssertionError  # abort raises

    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)}
    )
    servers = []
    ports = []
    for handlers in ((handler,), ()):
        server = grpc.server(ThreadPoolExecutor(max_workers=2))
        server.add_generic_rpc_handlers(handlers)
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        servers.append(server)
    yield ports[0], ports[1]
    for server in servers:
        server.stop(None)


@pytest.mark.parametrize(
    ("service", "outcome", "detail"),
    [
        ("", OK, "SERVING"),
        ("riva", OK, "SERVING"),
        ("asr", FAILED, "NOT_SERVING"),
        ("tts", FAILED, "grpc-status 5 NOT_FOUND: unknown service: tts 100%"),
        ("s" * 100_000, OK, "SERVING"),  # a request larger than the HTTP/2 window
    ],
)
def test_grpcio_server(
    grpcio_port: tuple[int, int], service: str, outcome: ProbeOutcome, detail: str
) -> None:
    result = run(run_probe(GrpcSpec(port=grpcio_port[0], service=service)))
    assert (result.outcome, result.detail) == (outcome, detail)


def test_grpcio_server_without_health_service_is_unimplemented(grpcio_port: tuple[int, int]) -> None:
    result = run(run_probe(GrpcSpec(port=grpcio_port[1])))
    assert result.outcome is FAILED and result.detail.startswith("grpc-status 12 UNIMPLEMENTED")


# ------------------------------------------------------------------------------------------ stun

MAGIC = 0x2112A442


class StunServer(asyncio.DatagramProtocol):
    """Answers Binding Requests per `mode`; counts the requests it saw (retransmissions)."""

    def __init__(self, mode: str) -> None:
        self.mode, self.requests = mode, 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, ...]) -> None:
        kind, length, magic = struct.unpack_from("!HHI", data)
        assert (kind, length, magic) == (0x0001, 0, MAGIC) and len(data) == 20
        self.requests += 1
        tid = data[8:20]
        if self.mode == "hang" or (self.mode == "drop-first" and self.requests == 1):
            return
        port = addr[1] ^ (MAGIC >> 16)
        ip = bytes(
            a ^ b for a, b in zip(socket.inet_aton(str(addr[0])), MAGIC.to_bytes(4, "big"), strict=True)
        )
        xor_mapped = struct.pack("!HHBBH", 0x0020, 8, 0, 1, port) + ip
        software = struct.pack("!HH", 0x8022, 5) + b"test\x00" + b"\x00" * 3  # padded to 4
        success = struct.pack("!HHI", 0x0101, len(software) + len(xor_mapped), MAGIC)
        if self.mode in ("wrong-tid", "wrong-tid-first"):
            self.transport.sendto(success + bytes(b ^ 0xFF for b in tid) + software + xor_mapped, addr)
            if self.mode == "wrong-tid":
                return
        if self.mode == "error":
            error_code = struct.pack("!HHHBB", 0x0009, 4 + 11, 0, 4, 0) + b"Bad Request" + b"\x00"
            self.transport.sendto(
                struct.pack("!HHI", 0x0111, len(error_code), MAGIC) + tid + error_code, addr
            )
            return
        self.transport.sendto(success + tid + software + xor_mapped, addr)


def probe_stun(mode: str, timeout_s: float = 2.0) -> tuple[ProbeResult, float, int]:
    async def main() -> tuple[ProbeResult, float, int]:
        loop = asyncio.get_running_loop()
        transport, server = await loop.create_datagram_endpoint(
            lambda: StunServer(mode), local_addr=("127.0.0.1", 0)
        )
        try:
            port = transport.get_extra_info("sockname")[1]
            t0 = time.monotonic()
            result = await run_probe(StunSpec(port=port, timeout_s=timeout_s))
            return result, time.monotonic() - t0, server.requests
        finally:
            transport.close()

    return run(main())


def test_stun_ok_decodes_xor_mapped_address() -> None:
    result, _, requests = probe_stun("ok")
    assert result.outcome is OK
    assert result.detail.startswith("mapped 127.0.0.1:")
    assert requests == 1


def test_stun_retransmits_after_a_lost_request() -> None:
    result, _, requests = probe_stun("drop-first")
    assert result.outcome is OK and requests == 2


def test_stun_ignores_a_wrong_transaction_id() -> None:
    result, _, _ = probe_stun("wrong-tid-first")  # the wrong answer first, then the right one
    assert result.outcome is OK
    result, elapsed, _ = probe_stun("wrong-tid", timeout_s=HANG_TIMEOUT)  # only wrong answers
    assert_timed_out(result, elapsed)


def test_stun_error_response_fails() -> None:
    result, _, _ = probe_stun("error")
    assert result.outcome is FAILED and result.detail == "Binding Error Response 400 Bad Request"


def test_stun_closed_port_fails_fast() -> None:
    t0 = time.monotonic()
    result = run(run_probe(StunSpec(port=closed_port(socket.SOCK_DGRAM))))
    assert result.outcome is FAILED and result.detail == "Connection refused"
    assert time.monotonic() - t0 < 0.5  # ICMP port unreachable, not the timeout


def test_stun_hung_server_times_out_after_retransmitting() -> None:
    result, elapsed, requests = probe_stun("hang", timeout_s=HANG_TIMEOUT)
    assert_timed_out(result, elapsed)
    assert requests >= 3  # 0, 50 ms, 150 ms with a 0.3 s timeout


def test_stun_address_decoding() -> None:
    tid = bytes(range(12))
    key = MAGIC.to_bytes(4, "big") + tid
    v6 = bytes(a ^ b for a, b in zip(socket.inet_pton(socket.AF_INET6, "::1"), key, strict=True))
    value = struct.pack("!BBH", 0, 2, 3478 ^ (MAGIC >> 16)) + v6
    assert stun_probe.decode_address(value, tid, xor=True) == "[::1]:3478"
    assert stun_probe.decode_address(value[:10], tid, xor=True) is None  # truncated: no crash
    assert stun_probe.mapped(struct.pack("!HH", 0x0020, 4) + b"\x00\x02\x00\x01", tid) == (
        "malformed XOR-MAPPED-ADDRESS"
    )
    plain = struct.pack("!HHBBH", 0x0001, 8, 0, 1, 3478) + socket.inet_aton("10.0.0.1")
    assert stun_probe.mapped(plain, tid) == "10.0.0.1:3478"


# ------------------------------------------------------------------------------------------ exec

FAKE_PODMAN = """#!/bin/sh
# fake podman: podman exec CONTAINER CMD... ; records its argv, one a line
for a in "$@"; do printf '%s\\n' "$a"; done > "$(dirname "$0")/argv"
case "$3" in
  ok) echo fine; exit 0 ;;
  fail) echo "first line"; echo "health: database unreachable" >&2; exit 1 ;;
  chatty) yes 'spam spam spam' | head -c 3000000; echo "last words"; exit 3 ;;
  hang) exec sleep 30 ;;
esac
exit 125
"""


@pytest.fixture
def fake_podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "podman"
    script.write_text(FAKE_PODMAN)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    return tmp_path


def test_exec_ok_passes_argv_verbatim(fake_podman: Path) -> None:
    result = run(run_probe(ExecSpec(command=("ok", "two words", "$HOME;x")), container="sparc-api"))
    assert result.outcome is OK and result.detail == "exit 0"
    argv = (fake_podman / "argv").read_text().splitlines()
    assert argv == ["exec", "sparc-api", "ok", "two words", "$HOME;x"]


def test_exec_nonzero_fails_with_last_line(fake_podman: Path) -> None:
    result = run(run_probe(ExecSpec(command=("fail",)), container="sparc-api"))
    assert result.outcome is FAILED
    assert result.detail == "exit 1: health: database unreachable"


def test_exec_chatty_output_keeps_only_the_tail(fake_podman: Path) -> None:
    result = run(run_probe(ExecSpec(command=("chatty",)), container="c"))
    assert result.outcome is FAILED and result.detail == "exit 3: last words"


def test_exec_hang_is_killed_at_the_timeout(fake_podman: Path) -> None:
    t0 = time.monotonic()
    result = run(run_probe(ExecSpec(command=("hang",), timeout_s=HANG_TIMEOUT), container="c"))
    assert_timed_out(result, time.monotonic() - t0)


def test_exec_without_podman_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = run(run_probe(ExecSpec(command=("true",)), container="c"))
    assert result.outcome is ERROR and result.detail == "podman not found on PATH"


def test_exec_without_container_is_an_error(fake_podman: Path) -> None:
    result = run(run_probe(ExecSpec(command=("ok",))))
    assert result.outcome is ERROR


# ------------------------------------------------------------------------- errors are not failures


def test_unexpected_exception_inside_a_probe_is_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(line: bytes) -> int:
        raise RuntimeError("bug in the parser")

    monkeypatch.setattr(http_probe, "parse_status_line", broken)
    result = probe_http(http_answer(b"HTTP/1.1 200 OK\r\n\r\n"))
    assert result.outcome is ERROR
    assert result.detail == "RuntimeError: bug in the parser"


def test_missing_h2_is_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "h2.config", None)  # import fails, as if h2 were not installed
    result = run(run_probe(GrpcSpec(port=closed_port())))
    assert result.outcome is ERROR and "ModuleNotFoundError" in result.detail


@pytest.mark.parametrize(
    "spec",
    [
        TcpSpec(port=0),
        TcpSpec(port=70000),
        HttpSpec(port=80, timeout_s=0),
        HttpSpec(port=80, status=(399, 200)),
        ExecSpec(command=()),
    ],
)
def test_bad_specs_are_errors(spec: Any) -> None:
    result = run(run_probe(spec, container="c"))
    assert result.outcome is ERROR, result


def test_unknown_spec_is_error() -> None:
    result = run(run_probe(object()))  # type: ignore[arg-type]
    assert result.outcome is ERROR


def test_status_line_parser() -> None:
    assert http_probe.parse_status_line(b"HTTP/1.1 200 OK\r\n") == 200
    assert http_probe.parse_status_line(b"HTTP/1.0 404 Not Found\n") == 404
    assert http_probe.parse_status_line(b"HTTP/1.1 204\r\n") == 204
    for bad in (b"HTTP/2 200\r\n", b"http/1.1 200 OK\r\n", b"HTTP/1.1 20 OK\r\n", b"HTTP/1.1 200OK\r\n"):
        with pytest.raises(http_probe.TargetFailed):
            http_probe.parse_status_line(bad)


def test_apply_polls_a_starting_service_soon_then_less_often_up_to_its_interval() -> None:
    """A quick first look again (a stand-in is up in ~0.1 s), then at most a quarter of the wait so far
    late, never rarer than the profile's interval (a model server that loads for minutes)."""
    from sparc_agent.probes.health import APPLY_FIRST_POLL_S, apply_poll_gap
    from sparc_agent.profile.model import Health

    health = Health.model_validate({"http": {"port": 8000}, "interval": "2s"})
    assert apply_poll_gap(health, 0.0) == APPLY_FIRST_POLL_S < 0.05
    assert apply_poll_gap(health, 1.0) == 0.25
    assert apply_poll_gap(health, 600.0) == 2.0
    gaps = [apply_poll_gap(health, w / 10) for w in range(100)]
    assert gaps == sorted(gaps)
