"""While the agent applies its profiles at start (a first apply may pull a 20 GB image), it keeps
extending systemd's start timeout instead of being killed by it."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

from sparc_agent.agent import runner as agent_mod
from sparc_agent.agent.runner import Agent, AgentOptions
from sparc_agent.state.paths import Paths

pytestmark = pytest.mark.unit


def test_slow_start_apply_extends_the_start_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notify = tmp_path / "notify"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(notify))
    server.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify))
    monkeypatch.setattr(agent_mod, "START_EXTEND_S", 0.2)
    # stands in for `python -m sparc_agent.cli.main apply PROFILE`: a slow first apply
    slow = tmp_path / "slow-python"
    slow.write_text("#!/bin/sh\nsleep 1\necho 'applied'\n")
    slow.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(slow))
    profile = tmp_path / "p.yaml"
    profile.write_text("name: x\n")
    try:
        agent = Agent(AgentOptions(profiles=[str(profile)]), Paths(tmp_path / "cfg", tmp_path / "state"))
        asyncio.run(agent._apply_profiles())
        got = []
        server.setblocking(False)
        while True:
            try:
                got.append(server.recv(4096))
            except BlockingIOError:
                break
    finally:
        server.close()
    extends = [m for m in got if m.startswith(b"EXTEND_TIMEOUT_USEC=")]
    assert len(extends) >= 3, got  # one at once, then one every START_EXTEND_S while the apply runs
    assert b"STATUS=applying p.yaml" in extends[0]
    assert extends[0].split(b"\n")[0] == b"EXTEND_TIMEOUT_USEC=600000"
