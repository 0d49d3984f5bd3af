"""apply --timings: moments counted from the process's start, in order, with the gaps between them."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from sparc_agent.apply import timeline

pytestmark = pytest.mark.unit


def test_the_clock_starts_at_the_process_start_not_at_the_import() -> None:
    # this test process has run for a while (pytest's start-up): the age says so
    assert timeline.process_age() > 0.05


def test_a_fresh_interpreter_counts_its_own_start() -> None:
    code = "from sparc_agent.apply import timeline as t; t.mark('first line'); print(t.format_timeline())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    seconds = float(out.split()[0])
    assert 0.0 < seconds < 5.0, out  # the interpreter's start and the import, before our first line
    assert out.rstrip().endswith("first line")


def test_moments_are_listed_in_order_with_the_gap_since_the_one_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(timeline, "_events", [])
    timeline.mark("one")
    time.sleep(0.05)
    timeline.mark("two")
    lines = timeline.format_timeline().splitlines()
    assert [line.split()[-1] for line in lines] == ["one", "two"]
    gap = float(lines[1].split()[2])
    assert gap >= 0.05
