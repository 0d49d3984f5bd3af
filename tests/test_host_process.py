"""host.process: the one way sparc-agent starts processes. Real processes (sh, sleep), no fakes."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from sparc_agent.host.process import kill_group, run, spawn

pytestmark = pytest.mark.unit


def test_run_returns_code_and_text_output_and_feeds_input() -> None:
    done = run(["sh", "-c", "cat; echo err >&2; exit 3"], input=b"in\xff")
    assert (done.returncode, done.stdout, done.stderr, done.ok) == (3, "in\ufffd", "err\n", False)
    assert run(["true"]).ok


def test_run_passes_only_the_given_environment() -> None:
    done = run(["/bin/sh", "-c", 'echo "$ONLY:$HOME"'], env={"ONLY": "x"})
    assert done.stdout == "x:\n"


def test_run_reports_missing_unrunnable_and_slow_commands_as_results(tmp_path: os.PathLike[str]) -> None:
    missing = run(["/nonexistent/sparc-no-such-binary"])
    assert (missing.returncode, missing.stderr) == (127, "/nonexistent/sparc-no-such-binary: not found")
    script = os.path.join(tmp_path, "not-executable")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n")
    assert run([script]).returncode == 126
    slow = run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert slow.returncode == 124 and "timed out" in slow.stderr


def test_spawn_merges_stderr_and_kill_group_reaches_forked_children() -> None:
    async def main() -> None:
        proc = await spawn(["sh", "-c", "echo out; echo err >&2"], stderr="stdout")
        out, _ = await proc.communicate()
        assert sorted(out.decode().split()) == ["err", "out"]

        # a child that forks a grandchild: killing the group ends both, so stdout closes
        proc = await spawn(["sh", "-c", "sleep 60 & echo started; wait"], new_session=True)
        assert proc.stdout is not None
        assert await proc.stdout.readline() == b"started\n"
        kill_group(proc)
        assert await asyncio.wait_for(proc.wait(), 10) == -9
        assert await asyncio.wait_for(proc.stdout.read(), 10) == b""  # the grandchild held it open

    asyncio.run(main())
