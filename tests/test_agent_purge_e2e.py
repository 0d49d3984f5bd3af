"""`down --purge` while the agent runs (issue 12 item 10): the running agent forgets the stack at its
next look at the state dir (no restart of the agent): no more events about it, no agent-state file,
no status, no series in /metrics; the other stack it supervises is left alone."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support.stackfiles import sparc, write_profile
from support.testhost import BB_IMAGE, UserManager, free_port, wait_for
from test_agent_e2e import agent

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def idle_stack(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "sparc-agent/v1",
        "name": name,
        "services": {"idle": {"image": BB_IMAGE, "command": ["sleep", "1000000"]}},
    }


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text: str = answer.read().decode()
        return text


def series_of(text: str, stack: str) -> list[str]:
    return [line for line in text.splitlines() if f'stack="{stack}"' in line and not line.startswith("#")]


def test_purge_makes_the_running_agent_forget_the_stack(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr, metrics_port = user_manager, free_port()
    gone, kept = mgr.name, f"{mgr.name}-b"
    for name in (gone, kept):
        done = sparc(mgr, "apply", str(write_profile(idle_stack(name), tmp_path / f"{name}.yaml")))
        assert done.returncode == 0, done.stdout + done.stderr
    config = mgr.config_dir / "sparc-agent" / "agent.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"metrics:\n  port: {metrics_port}\n")
    state = mgr.state_dir / "sparc-agent"
    with agent(mgr, "--no-apply") as a:
        for name in (gone, kept):
            wait_for(
                lambda n=name: a.find(event="state", stack=n, state="HEALTHY"), 30, 0.1, f"{name} HEALTHY"
            )
        wait_for(lambda: series_of(scrape(metrics_port), gone), 10, 0.1, "the stack's series")
        assert (state / gone / "agent-state.json").is_file()

        purge = sparc(mgr, "down", gone, "--purge")
        assert purge.returncode == 0, purge.stdout + purge.stderr
        t0 = time.monotonic()
        wait_for(lambda: a.find(event="forgotten", stack=gone), 10, 0.05, "the agent forgets the stack")
        forgotten = time.monotonic() - t0
        seen = len(a.events)
        time.sleep(2.5)  # one more look at the state dir (RECONCILE_S): nothing more about it
        assert not [e for e in a.events[seen:] if e.get("stack") == gone], a.log()
        assert not (state / gone).exists()  # its agent-state.json is not written back
        assert sparc(mgr, "status", gone).returncode == 2
        text = scrape(metrics_port)
        assert series_of(text, gone) == [], series_of(text, gone)
        assert f'sparc_service_state{{service="idle",stack="{kept}",state="HEALTHY"}} 1.0' in text
        # the same agent, never restarted, still supervising the other stack
        assert a.proc.poll() is None and len(a.find(event="start")) == 1, a.log()
        assert sparc(mgr, "status", kept).returncode == 0
        assert not a.find(event="state", stack=kept, state="STOPPED"), a.log()
        print(f"down --purge: the running agent forgot the stack {forgotten:.2f} s after the purge")
