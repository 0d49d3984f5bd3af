"""`sparc-agent run` survives a restart of the whole systemd user manager (issue 5).

`systemctl --user exit` (or a logout with linger off, then a new login) stops every unit of the manager,
containers included, and the bus with it; the new manager starts with every unit inactive (the rendered
units have no [Install]: nothing starts them at boot). The agent must reconnect and start the stack again
itself, without counting that against the services' crash budgets.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from support.stackfiles import status, unit_props
from support.testhost import UserManager, restart_manager, wait_for
from test_agent_e2e import agent, agent_state, all_healthy, applied, states, unit, wait_states

from sparc_agent.agent.runner import MANAGER_RESTARTED

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVICES = ("riva", "mas", "signaling", "turn", "unity")
BACK_WITHIN_S = 90.0  # new manager up -> every service HEALTHY again


def healthy_since(mgr: UserManager, wall: float) -> bool:
    """Every service HEALTHY, and became so after `wall` (the state file says HEALTHY all along while the
    agent is disconnected: that is the old manager's stack)."""
    services: dict[str, Any] = agent_state(mgr)["services"]
    return set(services) == set(SERVICES) and all(
        s["state"] == "HEALTHY" and s["since"] >= wall for s in services.values()
    )


def test_agent_restarts_the_stack_after_the_user_manager_restarted(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    applied(mgr, tmp_path)
    with agent(mgr, "--no-apply") as a:
        wait_states(mgr, all_healthy, 60, "all HEALTHY before the manager restart")
        before = {n: s["restarts_total"] for n, s in agent_state(mgr)["services"].items()}
        old_pid = mgr.pid

        stop_s = restart_manager(mgr)  # SIGTERM: exit.target stops every unit, then the manager exits
        back, back_wall = time.monotonic(), time.time()
        assert mgr.pid != old_pid and mgr.is_running()
        assert a.proc.poll() is None, a.log()  # the agent outlives its manager
        for s in SERVICES:  # the new manager starts nothing by itself
            assert unit_props(mgr, unit(mgr, s))["ActiveState"] in ("inactive", "activating", "active")

        wait_for(lambda: len(a.find(event="bus", reason="connected")) >= 2, 30, what="reconnected")
        assert any(str(e.get("reason", "")).startswith("disconnected") for e in a.find(event="bus")), a.log()
        # it says which one went (logged just after "connected": it asks the new manager first)
        wait_for(lambda: a.find(event="bus", reason=MANAGER_RESTARTED), 10, what="the manager restart named")
        wait_for(
            lambda: healthy_since(mgr, back_wall), BACK_WITHIN_S, 0.1, "all HEALTHY after the manager restart"
        )
        took = time.monotonic() - back
        wait_for(lambda: agent_state(mgr)["connected"], 10, what="state file says connected")
        assert a.proc.poll() is None, a.log()

        # really running under the new manager, and `status` shows this agent's view
        for s in SERVICES:
            assert unit_props(mgr, unit(mgr, s))["ActiveState"] == "active", s
        report = status(mgr, mgr.name)
        assert report["agent"]["pid"] == a.proc.pid
        assert all(s["supervisor"]["state"] == "HEALTHY" for s in report["services"]), report

        # no restart storm: at most one start per service, none FATAL, and it stays that way
        time.sleep(5)
        assert all_healthy(states(mgr)), states(mgr)
        after = {n: s["restarts_total"] for n, s in agent_state(mgr)["services"].items()}
        assert all(after[n] - before[n] <= 1 for n in SERVICES), (before, after)
        starts = {s: len(a.find(event="restart", service=s, by="agent")) for s in SERVICES}
        assert all(n <= 2 for n in starts.values()), (starts, a.log())  # one start (+ one dependency restart)
        assert not a.find(event="state", state="FATAL"), a.log()
        print(
            f"manager stopped in {stop_s:.1f} s; all {len(SERVICES)} services HEALTHY {took:.1f} s after"
            f" the new manager was up; restarts_total {before} -> {after}; agent restarts {starts}"
        )
