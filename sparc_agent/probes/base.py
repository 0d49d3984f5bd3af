"""Probe results, and the one place that turns exceptions into them.

As in kubelet's prober: a target that refuses, hangs or answers wrongly is FAILED; an exception we
did not expect (our own bug, a bad spec) is ERROR, so the supervisor never restarts a service for
our mistake.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sparc_agent.probes.fields import Port


class ProbeOutcome(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    ERROR = "error"


@dataclass(frozen=True)
class ProbeResult:
    """`phase`, `timings`, `hint`, `cause` and `facts` are for probes that go through steps (webrtc):
    how far it got, each step's seconds, what a person can do, and the service a failure points at."""

    outcome: ProbeOutcome
    latency_s: float
    detail: str = ""
    phase: str = ""
    timings: Mapping[str, float] = field(default_factory=dict)
    hint: str = ""
    cause: str = ""
    facts: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome is ProbeOutcome.OK


@dataclass(frozen=True)
class Timed:
    """Every spec has a timeout, from `health.timeout`; keyword-only, so a kind's own fields come first."""

    timeout_s: float = field(default=2.0, kw_only=True)


@dataclass(frozen=True)
class PortSpec(Timed):
    """A kind reached at a port of the target host."""

    port: Port


@dataclass(frozen=True)
class Target:
    """Where a probe runs against: the host's address for network kinds, the container for exec."""

    host: str = "127.0.0.1"
    container: str | None = None
    # secret name -> where its value is read ({"file": PATH} or {"env": NAME}), never the value
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


class TargetFailed(Exception):
    """The target answered, but not as a healthy service would."""


class ProbeError(Exception):
    """Not the target's fault: a bad spec, or something missing on our side (podman)."""


def os_error_text(exc: OSError) -> str:
    # asyncio's connect errors read "Connect call failed ('127.0.0.1', 1)"; the errno says more
    if exc.errno:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__


async def measured(check: Awaitable[str], timeout_s: float) -> ProbeResult:
    """Run `check` (returns a detail string on success) under `timeout_s`."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            detail = await check
    except TimeoutError as exc:
        # TimeoutError is also OSError(ETIMEDOUT) from the kernel: only our deadline is "timed out after"
        text = f"timed out after {timeout_s:g}s" if deadline.expired() else os_error_text(exc)
        return ProbeResult(ProbeOutcome.FAILED, time.monotonic() - start, text)
    except TargetFailed as exc:
        return ProbeResult(ProbeOutcome.FAILED, time.monotonic() - start, str(exc))
    except ProbeError as exc:
        return ProbeResult(ProbeOutcome.ERROR, time.monotonic() - start, str(exc))
    except OSError as exc:
        return ProbeResult(ProbeOutcome.FAILED, time.monotonic() - start, os_error_text(exc))
    except asyncio.IncompleteReadError as exc:
        got = f" after {len(exc.partial)} bytes" if exc.partial else ""
        return ProbeResult(ProbeOutcome.FAILED, time.monotonic() - start, f"connection closed{got}")
    except Exception as exc:
        return ProbeResult(ProbeOutcome.ERROR, time.monotonic() - start, f"{type(exc).__name__}: {exc}")
    return ProbeResult(ProbeOutcome.OK, time.monotonic() - start, detail)


def authority(host: str, port: int) -> str:
    """host:port as an HTTP Host header or :authority wants it (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_path(path: str) -> str:
    """A request target that cannot smuggle a second header line or request into ours."""
    if not path.startswith("/") or any(c.isspace() or ord(c) < 0x21 or ord(c) == 0x7F for c in path):
        raise ProbeError(f"bad probe path {path!r}: must start with / and contain no spaces or controls")
    return path


async def open_tcp(
    host: str, port: int, limit: int = 2**16
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port, limit=limit)


async def read_until(reader: asyncio.StreamReader, terminator: bytes) -> bytes:
    """Bytes up to and including `terminator`; the reader's `limit` caps how many a peer can make us hold."""
    try:
        return await reader.readuntil(terminator)
    except asyncio.LimitOverrunError as exc:
        raise TargetFailed(f"no {terminator!r} within the first {exc.consumed} bytes") from None
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise TargetFailed("connection closed without an answer") from None
        raise TargetFailed(f"connection closed mid-answer after {len(exc.partial)} bytes") from None


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
