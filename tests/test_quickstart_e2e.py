"""The README's first command, from a clean clone: `bash scripts/quickstart.sh` leaves the example stack
healthy and the agent active as sparc-agent.service under the quickstart's user manager; a container
killed afterwards comes back healthy with no command from anyone.

Uses the example's own ports (8000, 8080, 8888, 50051, 3478/udp, 49152-49200/udp) and the dev manager
named `quickstart`, as a user would. The README runs the quick start, then the tests: a quick start that
is up when this test begins is stopped for it and brought back from this checkout afterwards.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.testhost import PATH, REPO, _pid_alive, podman, run, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEV_STATE = Path("/run/sparc-dev-managers/quickstart.json")
STACK = "sparc-avatar"


def _clean_env() -> dict[str, str]:
    """A root shell's environment: no user manager of a test, no venv of ours."""
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TERM", "USER", "LOGNAME", "CI")}
    return {**keep, "PATH": PATH}


def _manager_env(src: Path, env: dict[str, str]) -> dict[str, str]:
    out = _dev_manager(src, "start", env).stdout
    exports = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in out.splitlines())
    return {**env, **exports}


def _status(src: Path, env: dict[str, str]) -> dict[str, dict[str, object]]:
    proc = run([str(src / ".venv/bin/sparc-agent"), "status", STACK, "--json"], env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    return {s["service"]: s for s in json.loads(proc.stdout)["services"]}


def _dev_manager(src: Path, action: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(src / "scripts/dev-manager.py"), action, "quickstart"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_quickstart_leaves_the_agent_running_and_it_heals_a_killed_container(tmp_path: Path) -> None:
    env = _clean_env()
    borrowed = DEV_STATE.exists() and _pid_alive(json.loads(DEV_STATE.read_text())["pid"])
    if borrowed:
        assert _dev_manager(REPO, "stop", env).returncode == 0
    try:
        _quickstart_from_a_clean_clone(tmp_path, env)
    finally:
        if borrowed:  # put the user's quick start back as it was: this checkout's, running
            back = subprocess.run(
                ["bash", "scripts/quickstart.sh"],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=1200,
            )
            assert back.returncode == 0, back.stdout[-2000:] + back.stderr[-2000:]


def _quickstart_from_a_clean_clone(tmp_path: Path, env: dict[str, str]) -> None:
    src = tmp_path / "sparc-agent"
    subprocess.run(["git", "clone", "-q", str(REPO), str(src)], check=True, timeout=120)
    try:
        t0 = time.monotonic()
        proc = subprocess.run(
            ["bash", "scripts/quickstart.sh"], cwd=src, env=env, capture_output=True, text=True, timeout=1200
        )
        print(f"quickstart: {time.monotonic() - t0:.0f} s\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "sparc-agent.service is active" in proc.stdout
        assert "podman kill sparc-avatar-mas" in proc.stdout  # it says how to watch it heal
        assert "agent: not running" not in proc.stdout

        menv = _manager_env(src, env)
        active = run(["systemctl", "--user", "is-active", "sparc-agent"], env=menv, check=False)
        assert active.stdout.strip() == "active", active.stdout + active.stderr
        before = _status(src, menv)["mas"]
        assert before["health"] == "ok" and before["supervisor"], before

        podman("kill", f"{STACK}-mas")
        t0 = time.monotonic()

        def healed() -> dict[str, object] | None:
            mas = _status(src, menv)["mas"]
            supervisor = mas["supervisor"] or {}
            assert isinstance(supervisor, dict)
            restarted = int(supervisor.get("restarts_total", 0)) >= 1
            ok = mas["health"] == "ok" and supervisor.get("state") == "HEALTHY" and restarted
            return mas if ok else None

        mas = wait_for(healed, timeout=120, interval=0.5, what="mas healthy again after podman kill")
        print(f"healed in {time.monotonic() - t0:.1f} s: {mas}")
        journal = run(
            [str(src / ".venv/bin/sparc-agent"), "logs", STACK, "mas", "-n", "30"], env=menv, check=False
        )
        print(journal.stdout[-2000:])
    finally:
        stop = _dev_manager(src, "stop", env)
        assert stop.returncode == 0 and not stop.stderr.strip(), stop.stderr
