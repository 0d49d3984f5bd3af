"""HTTP: GET answers with a status in range. HTTP/1.1, Connection: close, redirects never followed.

Only the response head is read, line by line, and at most MAX_HEAD bytes of it: a probe needs the
status, not the body.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from sparc_agent.probes.base import (
    PortSpec,
    ProbeResult,
    Target,
    TargetFailed,
    authority,
    check_path,
    close,
    measured,
    open_tcp,
    read_until,
)
from sparc_agent.probes.fields import HttpPath, StatusRange

# HTTP/1.0 and 1.1; the reason phrase is optional (RFC 9112 allows it empty, some servers drop the space)
STATUS_LINE = re.compile(rb"HTTP/1\.\d[ ]+(\d{3})(?:[ \t][^\r\n]*)?\r?\n\Z")
MAX_HEAD = 8192


def parse_status_line(line: bytes) -> int:
    m = STATUS_LINE.match(line)
    if not m:
        raise TargetFailed(f"not an HTTP/1 response: {line[:60]!r}")
    return int(m.group(1))


async def read_status(reader: asyncio.StreamReader) -> int:
    """The final status, skipping interim 1xx heads (103 Early Hints and the like); never 101's."""
    budget = MAX_HEAD
    while True:
        line = await read_until(reader, b"\n")
        budget -= len(line)
        status = parse_status_line(line)
        if not 100 <= status <= 199 or status == 101:
            return status
        while line.strip():  # the interim head's header lines, up to its blank line
            if budget <= 0:
                raise TargetFailed(f"response head longer than {MAX_HEAD} bytes")
            line = await read_until(reader, b"\n")
            budget -= len(line)


def get_request(path: str, target: Target, port: int, headers: str) -> bytes:
    """A GET request head: the path checked, Host as a URL names it, our User-Agent, then `headers`."""
    return (
        f"GET {check_path(path)} HTTP/1.1\r\nHost: {authority(target.host, port)}\r\n"
        f"User-Agent: sparc-agent\r\n{headers}\r\n"
    ).encode()


@dataclass(frozen=True)
class HttpSpec(PortSpec):
    path: HttpPath = "/"
    status: StatusRange = (200, 399)


async def probe(spec: HttpSpec, target: Target) -> ProbeResult:
    async def check() -> str:
        request = get_request(spec.path, target, spec.port, "Accept: */*\r\nConnection: close\r\n")
        lo, hi = spec.status
        reader, writer = await open_tcp(target.host, spec.port, limit=MAX_HEAD)
        try:
            writer.write(request)
            await writer.drain()
            status = await read_status(reader)
        finally:
            await close(writer)
        if not lo <= status <= hi:
            raise TargetFailed(f"HTTP {status} (want {lo}-{hi})")
        return f"HTTP {status}"

    return await measured(check(), spec.timeout_s)
