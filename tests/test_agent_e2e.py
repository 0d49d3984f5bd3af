"""`sparc-agent run` supervising a real stack: real user manager, real containers, stand-in images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from support.stackfiles import SPARC_AGENT, avatar_profile, sparc, status, unit_props, write_profile
from support.testhost import UserManager, podman, wait_for

from sparc_agent.agent.runner import BUS_RESTARTED

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# short timings, so that a test sees detection, backoff and FATAL within seconds
FAST_RESTART = {"backoff": {"initial": "500ms", "max": "4s"}, "max_restarts": 3, "window": "2m"}


class AgentProc:
    """A `sparc-agent run` child with its JSON event log collected from stderr."""

    def __init__(self, mgr: UserManager, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*SPARC_AGENT, "run", "--log-format", "json", *args],
            env=mgr.environ(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.raw.append(line)
            with suppress(ValueError):
                self.events.append(json.loads(line))

    def find(self, **match: Any) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if all(e.get(k) == v for k, v in match.items())]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def log(self) -> str:
        return "".join(self.raw[-80:])


@contextmanager
def agent(mgr: UserManager, *args: str) -> Iterator[AgentProc]:
    a = AgentProc(mgr, *args)
    try:
        yield a
    finally:
        a.stop(signal.SIGKILL)
        print("--- agent log ---\n" + a.log())


def agent_state(mgr: UserManager) -> dict[str, Any]:
    path = mgr.state_dir / "sparc-agent" / mgr.name / "agent-state.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def states(mgr: UserManager) -> dict[str, str]:
    try:
        return {n: s["state"] for n, s in agent_state(mgr)["services"].items()}
    except (OSError, ValueError, KeyError):
        return {}


def wait_states(mgr: UserManager, cond: Callable[[dict[str, str]], bool], timeout: float, what: str) -> None:
    wait_for(lambda: cond(states(mgr)), timeout, interval=0.1, what=what)


def all_healthy(s: dict[str, str]) -> bool:
    return bool(s) and all(v == "HEALTHY" for v in s.values())


def applied(mgr: UserManager, tmp: Path, **overrides: dict[str, Any]) -> dict[str, Any]:
    doc = avatar_profile(mgr, tmp, **overrides)
    done = sparc(mgr, "apply", str(write_profile(doc, tmp / "p.yaml")))
    assert done.returncode == 0, done.stdout + done.stderr
    return doc


def unit(mgr: UserManager, service: str) -> str:
    return f"{mgr.name}-{service}.service"


def pids(mgr: UserManager) -> dict[str, tuple[str, str]]:
    out = {}
    for s in ("riva", "mas", "signaling", "turn", "unity"):
        p = unit_props(mgr, unit(mgr, s))
        out[s] = (p["MainPID"], p["NRestarts"])
    return out


def test_adopts_running_stack_and_agent_restart_keeps_pids(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    applied(mgr, tmp_path)
    before = pids(mgr)
    with agent(mgr, "--no-apply") as a:
        wait_states(mgr, all_healthy, 30, "all HEALTHY after adoption")
        assert a.find(event="ready"), a.log()
        report = status(mgr, mgr.name)
        assert report["agent"]["pid"] == a.proc.pid
        assert all(s["supervisor"]["state"] == "HEALTHY" for s in report["services"]), report
        human = sparc(mgr, "status", mgr.name).stdout
        assert "SUPERVISOR" in human and "HEALTHY" in human, human
        a.stop(signal.SIGKILL)  # an agent crash must not touch the stack
    t0, wall = time.monotonic(), time.time()
    with agent(mgr, "--no-apply") as b:
        wait_for(lambda: b.find(event="ready"), 30, what="second agent ready")
        ready = time.monotonic() - t0
        wait_for(
            lambda: all(
                s["state"] == "HEALTHY" and s["since"] >= wall for s in agent_state(mgr)["services"].values()
            ),
            30,
            0.05,
            "all HEALTHY after re-adoption",
        )
        print(
            f"fault agent-sigkill: the next agent ready {ready:.2f} s and all HEALTHY"
            f" {time.monotonic() - t0:.2f} s after its start; PIDs kept"
        )
        assert pids(mgr) == before  # same processes, no restarts
        assert not b.find(event="restart")
        assert b.stop() == 0  # SIGTERM: the agent exits 0 ...
    assert pids(mgr) == before  # ... and the stack keeps running


@pytest.mark.parametrize("freeze", ["pause", "sigstop"])
def test_hung_service_is_detected_and_restarted(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path, freeze: str
) -> None:
    mgr = user_manager
    applied(mgr, tmp_path, signaling={"restart": FAST_RESTART})
    with agent(mgr, "--no-apply") as a:
        wait_states(mgr, all_healthy, 30, "all HEALTHY")
        old_pid = unit_props(mgr, unit(mgr, "signaling"))["MainPID"]
        container = f"{mgr.name}-signaling"
        if freeze == "pause":
            podman("pause", container)
        else:
            pid = podman("inspect", "-f", "{{.State.Pid}}", container).stdout.strip()
            for child in subprocess.run(["pgrep", "-P", pid], capture_output=True, text=True).stdout.split():
                os.kill(int(child), signal.SIGSTOP)  # the app under catatonit: SIGTERM stays pending
        t0 = time.monotonic()
        wait_for(lambda: a.find(event="state", service="signaling", state="UNHEALTHY"), 20, what="UNHEALTHY")
        detected = time.monotonic() - t0
        wait_for(
            lambda: unit_props(mgr, unit(mgr, "signaling"))["MainPID"] not in ("0", old_pid),
            20,
            what="restart",
        )
        wait_states(mgr, all_healthy, 30, "HEALTHY again")
        took = time.monotonic() - t0
        restarts = a.find(event="restart", service="signaling", by="agent")
        assert len(restarts) == 1 and restarts[0]["ok"], a.log()
        # the kill came after systemd began the stop: no crash for Restart= to restart, counted once
        assert not a.find(event="restart", service="signaling", by="systemd"), a.log()
        assert not a.find(event="state", service="signaling", state="STOPPED"), (
            a.log()
        )  # a restart, not a stop
        assert unit_props(mgr, unit(mgr, "signaling"))["NRestarts"] == "0"
        assert agent_state(mgr)["services"]["signaling"]["restarts_total"] == 1
        # unity depends on signaling being healthy: restarted after signaling recovered
        wait_for(
            lambda: a.find(event="restart", service="unity", reason="dependency signaling recovered"),
            20,
            what="unity restarted after signaling recovered",
        )
        wait_states(mgr, all_healthy, 30, "all HEALTHY at the end")
        # hung: SIGKILL for the container's processes at once (stop_grace 0s), never for podman's stop
        kills = a.find(event="kill", service="signaling")
        assert kills and "container processes" in kills[0]["whom"], a.log()
        print(
            f"fault frozen-service ({freeze}): UNHEALTHY after {detected:.2f} s,"
            f" HEALTHY again after {took:.2f} s"
        )


def test_crashed_container_comes_back_without_a_second_restart(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    applied(mgr, tmp_path)
    with agent(mgr, "--no-apply") as a:
        wait_states(mgr, all_healthy, 30, "all HEALTHY")
        pid = podman("inspect", "-f", "{{.State.Pid}}", f"{mgr.name}-turn").stdout.strip()
        os.kill(int(pid), signal.SIGKILL)
        t0 = time.monotonic()
        wait_for(
            lambda: a.find(event="restart", service="turn", by="systemd"), 20, 0.02, "systemd's restart seen"
        )
        detected = time.monotonic() - t0
        wait_states(mgr, all_healthy, 30, "HEALTHY again")
        took = time.monotonic() - t0
        assert not a.find(event="state", service="turn", state="STOPPED"), a.log()  # a restart, not a stop
        print(
            f"fault crash (kill -9): systemd's restart seen after {detected:.2f} s,"
            f" HEALTHY after {took:.2f} s"
        )
        assert unit_props(mgr, unit(mgr, "turn"))["NRestarts"] == "1"  # systemd's Restart=, counted once
        assert not a.find(event="restart", service="turn", by="agent"), a.log()  # and not doubled by us


def test_crash_loop_backs_off_then_goes_fatal_and_restart_clears_it(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    crasher = {
        "image": standin_images["bb"],
        "command": ["sh", "-c", "sleep 1; exit 3"],
        "restart": FAST_RESTART,
    }
    applied(mgr, tmp_path, crasher=crasher)
    with agent(mgr, "--no-apply") as a:
        wait_states(mgr, lambda s: s.get("crasher") == "FATAL", 60, "crasher FATAL")
        time.sleep(3)  # nothing restarts it any more
        restarts = agent_state(mgr)["services"]["crasher"]["restarts_total"]
        decisions = a.find(event="decision", service="crasher")
        backoffs = [e["backoff"] for e in a.find(event="state", service="crasher", state="BACKOFF")]
        assert restarts == FAST_RESTART["max_restarts"], a.log()  # no storm: exactly the budget
        assert len(decisions) <= 2 * restarts + 1, a.log()  # a hold + a start per restart, one stop
        assert backoffs == sorted(backoffs) and backoffs[-1] > backoffs[0], backoffs  # it grew
        assert unit_props(mgr, unit(mgr, "crasher"))["ActiveState"] in ("failed", "inactive")
        fatal = agent_state(mgr)["services"]["crasher"]
        assert fatal["fatal_reason"], fatal
        assert "FATAL" in sparc(mgr, "status", mgr.name).stdout
        assert all(v == "HEALTHY" for k, v in states(mgr).items() if k != "crasher")

        done = sparc(mgr, "restart", mgr.name, "crasher")
        assert done.returncode == 0, done.stderr
        wait_states(mgr, lambda s: s.get("crasher") != "FATAL", 10, "FATAL cleared")


def test_agent_reconnects_when_the_bus_goes_away(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    applied(mgr, tmp_path, signaling={"restart": FAST_RESTART})
    with agent(mgr, "--no-apply") as a:
        wait_states(mgr, all_healthy, 30, "all HEALTHY")
        bus_pid = mgr.systemctl("show", "dbus.service", "-p", "MainPID", "--value").stdout.strip()
        assert bus_pid not in ("", "0")
        os.kill(int(bus_pid), signal.SIGKILL)  # every connection drops; the socket unit restarts the bus
        t0 = time.monotonic()
        wait_for(lambda: len(a.find(event="bus", reason="connected")) >= 2, 30, what="reconnected")
        reconnected = time.monotonic() - t0
        # it says which one went: the bus daemon, not the user manager (issue 12 item 11)
        wait_for(lambda: a.find(event="bus", reason=BUS_RESTARTED), 10, what="the bus daemon named")
        assert not [e for e in a.find(event="bus") if "manager was restarted" in str(e.get("reason"))], (
            a.log()
        )
        wait_for(lambda: agent_state(mgr)["connected"], 10, what="state file says connected")
        # and it still supervises: a hung service is restarted after the reconnect
        podman("pause", f"{mgr.name}-signaling")
        wait_for(lambda: a.find(event="restart", service="signaling", by="agent"), 30, what="restart")
        wait_states(mgr, all_healthy, 30, "HEALTHY again")
        print(f"fault bus-daemon-killed: agent reconnected {reconnected:.2f} s after SIGKILL of dbus-daemon")


def test_new_generation_is_picked_up_without_an_agent_restart(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    doc = applied(mgr, tmp_path)
    with agent(mgr, "--no-apply") as a:
        wait_states(mgr, all_healthy, 30, "all HEALTHY")
        del doc["services"]["unity"]
        done = sparc(mgr, "apply", str(write_profile(doc, tmp_path / "p.yaml")))
        assert done.returncode == 0, done.stderr
        wait_for(lambda: a.find(event="generation", generation=2), 20, what="generation 2 seen")
        wait_states(
            mgr, lambda s: set(s) == {"riva", "mas", "signaling", "turn"} and all_healthy(s), 30, "4/4"
        )
        assert a.proc.poll() is None


def test_each_probe_kind_passes_healthy_and_fails_broken(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    import asyncio

    from support.testhost import free_port

    import sparc_agent.probes as ps
    from sparc_agent.probes import ProbeOutcome, run_probe

    mgr = user_manager
    doc = applied(mgr, tmp_path)
    port = {s: doc["services"][s]["health"] for s in ("riva", "mas", "signaling", "turn")}
    riva, mas = port["riva"]["grpc"]["port"], port["mas"]["http"]["port"]
    sig, turn = port["signaling"]["websocket"]["port"], port["turn"]["stun"]["port"]
    closed = free_port("both")
    unity = f"{mgr.name}-unity"

    def outcome(spec: ps.ProbeSpec, container: str | None = None) -> ProbeOutcome:
        return asyncio.run(run_probe(spec, container=container)).outcome

    healthy = [
        ps.TcpSpec(mas),
        ps.HttpSpec(mas, "/health"),
        ps.WebSocketSpec(sig),
        ps.GrpcSpec(riva),
        ps.StunSpec(turn),
        ps.ExecSpec(("pgrep", "-f", "SPARC-P.x86_64")),
    ]
    assert [outcome(s, unity) for s in healthy] == [ProbeOutcome.OK] * 6
    broken = {
        "tcp closed port": ps.TcpSpec(closed, timeout_s=1),
        "http wrong status": ps.HttpSpec(mas, "/nope", timeout_s=1),
        "http closed port": ps.HttpSpec(closed, timeout_s=1),
        "websocket on plain HTTP": ps.WebSocketSpec(mas, "/health", timeout_s=1),
        "grpc on plain HTTP": ps.GrpcSpec(mas, timeout_s=1),
        "grpc closed port": ps.GrpcSpec(closed, timeout_s=1),
        "stun nobody listening": ps.StunSpec(closed, timeout_s=1),
        "exec command fails": ps.ExecSpec(("pgrep", "-f", "no-such-process"), timeout_s=3),
    }
    got = {name: outcome(spec, unity) for name, spec in broken.items()}
    assert got == dict.fromkeys(broken, ProbeOutcome.FAILED), got
    # a hang past the timeout: the frozen service accepts TCP (the kernel does) but never answers
    podman("pause", f"{mgr.name}-signaling")
    podman("pause", f"{mgr.name}-riva")
    podman("pause", f"{mgr.name}-turn")
    try:
        hung = [
            ps.WebSocketSpec(sig, timeout_s=0.5),
            ps.GrpcSpec(riva, timeout_s=0.5),
            ps.StunSpec(turn, timeout_s=0.5),
        ]
        results = [asyncio.run(run_probe(s)) for s in hung]
        assert all(r.outcome is ProbeOutcome.FAILED and "timed out" in r.detail for r in results), results
    finally:
        for s in ("signaling", "riva", "turn"):
            podman("unpause", f"{mgr.name}-{s}", check=False)
