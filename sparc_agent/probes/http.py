"""HTTP: GET answers with a status in range. HTTP/1.1, no redirects followed."""

from __future__ import annotations

import re

from .base import ProbeResult, TargetFailed, close, measured, open_tcp
from .spec import HttpSpec

STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")
MAX_HEAD = 8192


async def probe(spec: HttpSpec, host: str) -> ProbeResult:
    async def check() -> str:
        reader, writer = await open_tcp(host, spec.port)
        try:
            writer.write(
                f"GET {spec.path} HTTP/1.1\r\nHost: {host}:{spec.port}\r\nUser-Agent: sparc-agent\r\n"
                "Accept: */*\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            line = await reader.readline()
        finally:
            await close(writer)
        m = STATUS_LINE.match(line[:MAX_HEAD])
        if not m:
            raise TargetFailed(f"not an HTTP response: {line[:60]!r}")
        status = int(m.group(1))
        lo, hi = spec.status
        if not lo <= status <= hi:
            raise TargetFailed(f"HTTP {status} (want {lo}-{hi})")
        return f"HTTP {status}"

    return await measured(check(), spec.timeout_s)
