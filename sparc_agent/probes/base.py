"""Probe results, and the one place that turns exceptions into them.

A target that refuses, hangs or answers wrongly is FAILED; an exception we did not expect
(our own bug, a bad spec) is ERROR, so the supervisor never restarts a service for our mistake.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable
from dataclasses import dataclass


class ProbeOutcome(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    ERROR = "error"


@dataclass(frozen=True)
class ProbeResult:
    outcome: ProbeOutcome
    latency_s: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is ProbeOutcome.OK


class TargetFailed(Exception):
    """The target answered, but not as a healthy service would."""


async def measured(check: Awaitable[str], timeout_s: float) -> ProbeResult:
    """Run `check` (returns a detail string on success) under `timeout_s`."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            detail = await check
    except TimeoutError:
        return ProbeResult(ProbeOutcome.FAILED, time.monotonic() - start, f"timed out after {timeout_s:g}s")
    except TargetFailed as exc:
        return ProbeResult(ProbeOutcome.FAILED, time.monotonic() - start, str(exc))
    except (OSError, asyncio.IncompleteReadError, EOFError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        return ProbeResult(ProbeOutcome.FAILED, time.monotonic() - start, text)
    except Exception as exc:
        return ProbeResult(ProbeOutcome.ERROR, time.monotonic() - start, f"{type(exc).__name__}: {exc}")
    return ProbeResult(ProbeOutcome.OK, time.monotonic() - start, detail)


async def open_tcp(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
