"""Where an apply's time goes (`apply --timings`): moments since the process started, in order.

The clock starts at the process's own start (the kernel's record of it), so the interpreter's start and
the imports before the first line of ours are counted too: a user waits for those as well.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_events: list[tuple[float, str]] = []


def process_age() -> float:
    """Seconds since this process started (0.0 where /proc does not tell)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, ticks since boot
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(time.clock_gettime(time.CLOCK_BOOTTIME) - started, 0.0)


_offset = time.monotonic() - process_age()  # the process's start on the monotonic clock


def mark(what: str) -> None:
    """Record that `what` just happened."""
    _events.append((time.monotonic() - _offset, what))


def format_timeline() -> str:
    """One line per moment: seconds since the process started, the gap since the moment before, what."""
    lines, last = [], 0.0
    for at, what in sorted(_events):
        gap = f"+{at - last:.3f}"
        lines.append(f"{at:7.3f} s {gap:>8}  {what}")
        last = at
    return "\n".join(lines)
