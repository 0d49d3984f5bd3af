"""Faults the agent must survive on the real test host, each timed: how long until the agent saw it
(detection) and until the stack was healthy again (recovery). Figures are printed, never asserted.

Other faults live beside the feature they exercise: the user manager restart in
test_agent_manager_restart_e2e.py; the bus restart, a frozen service and the agent's own SIGKILL in
test_agent_e2e.py (extended here with timings where they were not measured); a published port stolen
while the stack runs in test_agent_port_stolen_e2e.py; an unavailable image (apply exits 3) in
test_pull_e2e.py; `down --purge` under a running agent in test_agent_purge_e2e.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support.stackfiles import sparc, unit_props, write_profile
from support.testhost import UserManager, podman, wait_for
from test_agent_e2e import (
    FAST_RESTART,
    AgentProc,
    agent,
    agent_state,
    all_healthy,
    applied,
    unit,
    wait_states,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def freeze(mgr: UserManager, service: str) -> None:
    """SIGSTOP the container's application (under catatonit): it keeps its port and never answers."""
    pid = podman("inspect", "-f", "{{.State.Pid}}", f"{mgr.name}-{service}").stdout.strip()
    children = subprocess.run(["pgrep", "-P", pid], capture_output=True, text=True).stdout.split()
    assert children, f"no process under catatonit {pid}"
    for child in children:
        os.kill(int(child), signal.SIGSTOP)


def idle_stack(mgr: UserManager, services: int) -> dict[str, Any]:
    """A second stack on the same manager: `services` idle services, no ports. (A new generation adds
    one: restarting the only container of a pod stops the pod with it, --exit-policy=stop.)"""
    idle = {"image": "localhost/sparc-test/bb:test", "command": ["sleep", "1000000"]}
    return {
        "apiVersion": "sparc-agent/v1",
        "name": f"{mgr.name}-b",
        "services": {f"idle{n}": idle for n in range(services)},
    }


def stack_states(mgr: UserManager, stack: str) -> dict[str, str]:
    path = mgr.state_dir / "sparc-agent" / stack / "agent-state.json"
    try:
        return {n: s["state"] for n, s in json.loads(path.read_text())["services"].items()}
    except (OSError, ValueError, KeyError):
        return {}


def apply_doc(mgr: UserManager, doc: dict[str, Any], path: Path) -> None:
    done = sparc(mgr, "apply", str(write_profile(doc, path)))
    assert done.returncode == 0, done.stdout + done.stderr


def restarted_by_agent(a: AgentProc, service: str) -> list[dict[str, Any]]:
    return a.find(event="restart", service=service, by="agent")


def test_an_action_in_flight_outlives_the_session_that_ends_under_it(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    """Issue 12 item 1: a new generation of *another* stack ends the agent's session while signaling's
    restart is in flight (its stop waits 8 s for a SIGTERM the frozen process never acts on). The
    restart must still complete and be seen, and signaling must stay supervised."""
    mgr = user_manager
    applied(mgr, tmp_path, signaling={"restart": {**FAST_RESTART, "stop_grace": "8s"}})
    apply_doc(mgr, idle_stack(mgr, 1), tmp_path / "b.yaml")
    with agent(mgr, "--no-apply") as a:
        wait_for(lambda: all_healthy(stack_states(mgr, mgr.name)), 40, 0.1, "stack A HEALTHY")
        wait_for(lambda: all_healthy(stack_states(mgr, f"{mgr.name}-b")), 20, 0.1, "stack B HEALTHY")
        freeze(mgr, "signaling")
        t0 = time.monotonic()
        wait_for(lambda: a.find(event="decision", service="signaling", act="restart"), 20, 0.05, "decision")
        detected = time.monotonic() - t0
        # while the restart waits out its stop grace: a new generation of stack B ends the session
        apply_doc(mgr, idle_stack(mgr, 2), tmp_path / "b.yaml")
        wait_for(lambda: a.find(event="generation", stack=f"{mgr.name}-b", generation=2), 10, 0.05, "gen 2")
        assert not restarted_by_agent(a, "signaling"), "the restart ended before the session did: no test"
        wait_for(lambda: restarted_by_agent(a, "signaling"), 30, 0.1, "the restart seen through")
        wait_for(lambda: all_healthy(stack_states(mgr, mgr.name)), 30, 0.1, "stack A HEALTHY again")
        recovered = time.monotonic() - t0
        # still supervised: the next hang is restarted too
        freeze(mgr, "signaling")
        wait_for(lambda: len(restarted_by_agent(a, "signaling")) >= 2, 40, 0.1, "second restart")
        wait_for(lambda: all_healthy(stack_states(mgr, mgr.name)), 30, 0.1, "HEALTHY after the second")
        assert all(e["ok"] for e in restarted_by_agent(a, "signaling")), a.log()
        assert agent_state(mgr)["services"]["signaling"]["restarts_total"] == 2
        print(
            f"fault action-cancelled-by-session-end: detection {detected:.2f} s, recovery {recovered:.2f} s"
            " (8 s stop grace)"
        )


def crasher(image: str, marks: Path) -> dict[str, Any]:
    """A service that crashes a second after each start and leaves one line per start in marks/starts:
    the count of real starts, whoever made them."""
    return {
        "image": image,
        "command": ["sh", "-c", "echo start >> /marks/starts; sleep 1; exit 3"],
        "volumes": [f"{marks}:/marks"],
        "restart": FAST_RESTART,
    }


def starts(marks: Path) -> int:
    try:
        return len((marks / "starts").read_text().splitlines())
    except OSError:
        return 0


def test_crash_loop_restarts_before_the_agent_looked_count_toward_exactly_max_restarts(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    """Issue 12 item 2: systemd restarts the crasher before the agent runs; with the agent the service is
    started exactly 1 + max_restarts times in all, then FATAL, and systemd's counters are left alone."""
    mgr = user_manager
    marks = tmp_path / "marks"
    marks.mkdir()
    applied(mgr, tmp_path, crasher=crasher(standin_images["bb"], marks))
    t0 = time.monotonic()
    wait_for(lambda: starts(marks) >= 2, 30, 0.05, "a restart by systemd before the agent runs")
    before_agent = starts(marks)
    with agent(mgr, "--no-apply") as a:
        wait_states(mgr, lambda s: s.get("crasher") == "FATAL", 60, "crasher FATAL")
        fatal_after = time.monotonic() - t0
        time.sleep(4)  # nothing starts it again: not the agent, not systemd
        limit = FAST_RESTART["max_restarts"]
        svc = agent_state(mgr)["services"]["crasher"]
        assert starts(marks) == 1 + limit, (starts(marks), a.log())
        assert svc["restarts_total"] == limit and svc["restarts"] == limit, svc
        # the agent knew its budget was spent (it counted systemd's restarts before it looked): it did
        # not have to learn it from systemd refusing a start (StartLimitBurst)
        assert svc["fatal_reason"].startswith(f"{limit} restarts within"), svc
        by = Counter(e["by"] for e in a.find(event="restart", service="crasher"))
        props = unit_props(mgr, unit(mgr, "crasher"))
        assert props["ActiveState"] in ("failed", "inactive"), props  # stopped for good
        print(
            f"fault crash-loop: {starts(marks)} starts in all ({before_agent} before the agent ran) with"
            f" max_restarts {limit}; agent counted {svc['restarts_total']} ({dict(by)});"
            f" FATAL {fatal_after:.2f} s after the apply; NRestarts {props['NRestarts']};"
            f" reason: {svc['fatal_reason']}"
        )
