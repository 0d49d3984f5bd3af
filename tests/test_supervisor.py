"""The supervision state machine with a fake clock: no systemd, no sockets, no sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import socket
import struct
from typing import Any

import pytest

from sparc_agent.agent.supervisor import (
    Act,
    Action,
    ProbeView,
    ServiceMachine,
    ServicePlan,
    StackPlan,
    State,
    UnitView,
)
from sparc_agent.errors import ManagerDisconnected, SystemdError

pytestmark = pytest.mark.unit

OK = ProbeView("ok", 0.01, "HTTP 200")
FAIL = ProbeView("failed", 1.0, "timed out after 1s")
ERROR = ProbeView("error", 0.0, "ValueError: our bug")


def plan(**kw: Any) -> ServicePlan:
    base: dict[str, Any] = dict(
        name="web",
        unit="s-web.service",
        container="s-web",
        probe={"kind": "http", "port": 8000, "path": "/", "status": [200, 399], "timeout_s": 1.0},
        interval=2.0,
        timeout=1.0,
        retries=2,
        backoff_initial=1.0,
        backoff_max=8.0,
        max_restarts=3,
        window=60.0,
    )
    base.update(kw)
    return ServicePlan(**base)


def running(inv: str = "a", n: int = 0) -> UnitView:
    return UnitView("active", "running", "success", n, 100, inv)


def failed(result: str = "signal", n: int = 0, inv: str = "a") -> UnitView:
    return UnitView("failed", "failed", result, n, 0, inv)


def auto_restart(n: int = 0, inv: str = "a") -> UnitView:
    return UnitView("activating", "auto-restart", "signal", n, 0, inv)


def healthy_machine(p: ServicePlan | None = None, t: float = 0.0) -> ServiceMachine:
    m = ServiceMachine(p or plan(), t, rng=lambda: 0.0)
    m.adopt_running(running(), t)
    if m.has_probe:
        assert m.probe_due(t)
        m.on_probe(OK, t)
    assert m.state is State.HEALTHY
    return m


def test_backoff_is_capped_exponential() -> None:
    p = plan(backoff_initial=1.0, backoff_max=8.0, multiplier=2.0)
    assert [p.backoff(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]


def test_adoption_probes_with_jitter_and_never_restarts() -> None:
    m = ServiceMachine(plan(interval=5.0), 0.0, rng=lambda: 0.5)
    m.adopt_running(running(), 0.0)
    assert m.state is State.STARTING
    assert m.next_probe_at == pytest.approx(0.5)  # half of min(interval, 1 s)
    assert m.due(0.0) is None
    m.on_probe(OK, 0.6)
    assert m.state is State.HEALTHY and m.next_probe_at == pytest.approx(5.6)


def test_hang_is_confirmed_after_retries_then_restarted_at_once() -> None:
    m = healthy_machine()
    m.on_probe(FAIL, 3.0)  # timed out after 1 s: the next probe starts at once (start to start)
    assert m.state is State.HEALTHY and m.next_probe_at == pytest.approx(3.0)
    m.on_probe(ProbeView("failed", 0.1, "timed out after 1s"), 3.1)  # quick: the next after 0.5 - 0.1 s
    assert m.next_probe_at == pytest.approx(3.5)
    assert m.state is State.BACKOFF and m.backoff_until == pytest.approx(3.1)  # the first: no backoff
    action = m.due(3.1)
    assert action == Action(Act.RESTART, "unhealthy: timed out after 1s", 1, kill_after=0.0)  # hung: no grace
    assert m.due(5.6) is None  # busy: never two at once
    m.on_action_done(action, True, 6.2)
    assert m.state is State.STARTING and m.restarts_in_window(6.2) == 1
    m.on_unit(running("b"), 6.2)
    m.on_probe(OK, 6.5)
    assert m.state is State.HEALTHY and m.recovered
    events = [e["event"] for e in m.drain()]
    assert "restart" in events and events.count("state") >= 4


def test_probe_ok_during_backoff_cancels_the_restart() -> None:
    m = healthy_machine()
    m.on_probe(FAIL, 3.0)
    m.on_probe(FAIL, 4.5)
    assert m.state is State.BACKOFF
    m.on_probe(OK, 5.0)
    assert m.state is State.HEALTHY and m.due(10.0) is None


def test_probe_errors_are_ours_and_never_restart() -> None:
    m = healthy_machine()
    for t in range(3, 30, 2):
        m.on_probe(ERROR, float(t))
    assert m.state is State.HEALTHY and m.due(40.0) is None
    assert any(e["event"] == "probe_error" for e in m.drain())


def test_start_period_failures_do_not_count() -> None:
    m = ServiceMachine(plan(start_period=10.0), 0.0, rng=lambda: 0.0)
    m.adopt_running(running(), 0.0)
    for t in (0.0, 2.0, 4.0, 6.0, 8.0):
        m.on_probe(FAIL, t)
    assert m.state is State.STARTING
    m.on_probe(FAIL, 10.5)
    m.on_probe(FAIL, 11.0)
    assert m.state is State.BACKOFF


def test_policy_no_observes_but_never_restarts() -> None:
    m = healthy_machine(plan(policy="no"))
    m.on_probe(FAIL, 3.0)
    m.on_probe(FAIL, 4.0)
    assert m.state is State.UNHEALTHY and m.due(100.0) is None
    m.on_unit(failed(), 101.0)
    assert m.state is State.STOPPED and m.due(200.0) is None


def test_systemd_restarting_a_crash_is_counted_not_doubled() -> None:
    m = healthy_machine()
    # systemd 252 after SIGKILL: failed, auto-restart (NRestarts+1 later), inactive, active
    m.on_unit(failed(), 10.0)
    assert m.state is State.BACKOFF
    m.on_unit(auto_restart(), 10.01)
    assert m.due(10.5) is None  # first attempt: systemd's RestartSec equals our delay, let it restart
    m.on_unit(UnitView("inactive", "dead", "signal", 1, 0, "a", job=7), 11.0)
    assert m.restarts_in_window(11.0) == 1  # NRestarts 0 -> 1 counted
    assert m.due(11.0) is None  # it is not failed: no start from us either
    assert m.state is State.BACKOFF  # and not STOPPED: systemd's restart job (7) is queued
    m.on_unit(running("b", n=1), 11.1)
    assert m.state is State.STARTING
    m.on_probe(OK, 11.3)
    assert m.state is State.HEALTHY and m.restarts_total == 1
    assert not [e for e in m.drain() if e["event"] == "restart" and e.get("by") == "agent"]


def test_systemds_restart_that_failed_on_a_dependency_is_ours_to_retry_within_the_budget() -> None:
    """The pod could not bind its port: systemd's restart job ended with "dependency", the unit stays
    inactive/dead (Result still exit-code) with no job queued. Nothing else will start it: we do, after
    the backoff, and each failed start counts; never STOPPED, never a wait for a start that won't come."""
    m = healthy_machine(plan(probe=None, max_restarts=3))
    m.on_unit(failed(result="exit-code"), 10.0)
    m.on_unit(UnitView("activating", "auto-restart", "exit-code", 1, 0, "a"), 10.01)
    m.on_unit(UnitView("inactive", "dead", "exit-code", 1, 0, "a", job=9), 11.0)  # restart job queued
    assert m.due(11.0) is None and m.state is State.BACKOFF
    m.on_unit(UnitView("inactive", "dead", "exit-code", 1, 0, "a"), 11.1)  # the job failed: dependency
    assert m.state is State.BACKOFF
    t, starts = 11.1, 0
    while (action := m.due(t)) is not None or m.state is State.BACKOFF:
        if action is None:
            wake = m.next_wakeup(after=t)
            assert wake is not None, "waits for a start that will not come"
            t = wake
            continue
        assert action.act is Act.START
        starts += 1
        m.on_action_done(action, False, t, "start x.service: job dependency")
    assert m.state is State.FATAL and "job dependency" in m.reason
    assert m.restarts_in_window(t) == 3 and starts == 2  # systemd's restart and ours: the budget


def test_a_time_that_passed_with_nothing_to_do_is_no_wakeup() -> None:
    m = healthy_machine()
    m.on_unit(failed(), 10.0)
    m.on_unit(auto_restart(), 10.01)
    assert m.due(12.0) is None  # systemd restarts it: we wait for the unit, not for the clock
    assert m.next_wakeup() == m.backoff_until and m.next_wakeup(after=12.0) is None


def test_longer_backoff_holds_systemds_restart_and_starts_later() -> None:
    m = healthy_machine()
    m.on_unit(failed(), 10.0)
    m.on_unit(auto_restart(), 10.0)
    m.on_unit(UnitView("inactive", "dead", "signal", 1, 0, "a"), 11.0)
    m.on_unit(running("b", n=1), 11.1)
    m.on_probe(OK, 11.2)
    # second crash: the policy wants 2 s, systemd's RestartSec is 1 s
    m.on_unit(failed(n=1, inv="b"), 20.0)
    assert m.state is State.BACKOFF and m.backoff_until == pytest.approx(22.0)
    m.on_unit(auto_restart(n=2, inv="b"), 20.01)  # systemd counts it on entering auto-restart
    hold = m.due(20.02)
    assert hold is not None and hold.act is Act.HOLD
    m.on_action_done(hold, True, 20.1)
    m.on_unit(UnitView("inactive", "dead", "signal", 2, 0, "b"), 20.1)
    assert m.state is State.BACKOFF and m.due(21.0) is None
    start = m.due(22.0)
    assert start is not None and start.act is Act.START
    m.on_action_done(start, True, 22.5)
    assert m.state is State.STARTING and m.restarts_in_window(22.5) == 2  # one restart, counted once


def test_crash_loop_goes_fatal_after_max_restarts_with_growing_backoff() -> None:
    m = healthy_machine(plan(probe=None, max_restarts=3))
    t, backoffs = 10.0, []
    for n in range(10):
        m.on_unit(failed(result="exit-code", inv=str(n)), t)
        if m.state is State.FATAL:
            break
        assert m.backoff_until is not None
        backoffs.append(m.backoff_until - t)
        t = m.backoff_until
        action = m.due(t)
        assert action is not None and action.act is Act.START
        m.on_action_done(action, True, t)
        m.on_unit(running(str(n + 100)), t)
        t += 1.0
    assert m.state is State.FATAL and m.restarts_total == 3
    assert backoffs == [1.0, 2.0, 4.0]
    assert m.due(t + 1000) is None
    assert "3 restarts within 60s" in m.reason


def test_start_limit_hit_is_fatal() -> None:
    m = healthy_machine()
    m.on_unit(failed(result="start-limit-hit"), 5.0)
    assert m.state is State.FATAL and "start limit" in m.reason


def test_fatal_cancels_a_pending_systemd_restart() -> None:
    m = healthy_machine(plan(max_restarts=1))
    m.on_unit(failed(), 1.0)
    m.on_unit(auto_restart(n=0), 1.0)
    m.on_unit(running("b", n=1), 2.0)  # systemd's restart: 1 of 1
    m.on_unit(failed(n=1, inv="b"), 3.0)
    assert m.state is State.FATAL
    m.on_unit(auto_restart(n=1, inv="b"), 3.01)
    stop = m.due(3.02)
    assert stop is not None and stop.act is Act.STOP


def test_manual_start_clears_fatal_and_the_budget() -> None:
    m = healthy_machine(plan(max_restarts=0))
    m.on_unit(failed(result="exit-code"), 1.0)
    assert m.state is State.FATAL
    m.on_unit(UnitView("activating", "start", "success", 0, 0, "manual"), 50.0)
    m.on_unit(running("manual"), 50.1)  # `sparc-agent restart`: a new invocation, not an auto-restart
    assert m.state is State.STARTING and m.restarts_in_window(50.1) == 0


def test_healthy_for_a_window_resets_the_count() -> None:
    m = healthy_machine(plan(window=60.0))
    m.on_probe(FAIL, 3.0)
    m.on_probe(FAIL, 4.0)
    action = m.due(5.0)
    assert action is not None
    m.on_action_done(action, True, 5.5)
    m.on_unit(running("b"), 5.5)
    m.on_probe(OK, 6.0)
    assert m.attempt == 1
    assert m.next_wakeup() == pytest.approx(8.0)  # next probe; the reset is due at 66
    m.due(65.0)
    assert m.attempt == 1
    m.due(66.0)
    assert m.attempt == 0 and m.restarts_in_window(66.0) == 0
    assert any(e["event"] == "reset" for e in m.drain())


def test_someone_stopping_the_unit_is_respected() -> None:
    m = healthy_machine(plan(policy="always"))
    m.on_unit(UnitView("deactivating", "stop-sigterm", "success", 0, 100, "a"), 5.0)
    m.on_unit(UnitView("inactive", "dead", "success", 0, 0, "a"), 5.5)
    assert m.state is State.STOPPED and m.due(100.0) is None


def test_a_restarted_user_manager_gets_the_running_services_started_again_uncounted() -> None:
    dead = UnitView("inactive", "dead", "", 0, 0, "")  # the new manager never ran it
    m = healthy_machine()
    stopped = healthy_machine()
    stopped.on_unit(UnitView("inactive", "dead", "success", 0, 0, "a"), 3.0)  # by someone, before
    for machine in (m, stopped):
        machine.on_manager_restart(10.0)
        machine.on_unit(dead, 10.0)
    assert stopped.state is State.STOPPED and stopped.due(20.0) is None  # still respected
    assert m.state is State.BACKOFF
    action = m.due(10.0)
    assert action == Action(Act.START, "user manager restarted: start again", 0)
    m.on_action_done(action, True, 10.8)
    assert m.state is State.STARTING and m.restarts_in_window(10.8) == 0 and m.restarts_total == 0
    m.on_unit(running("new"), 10.8)
    m.on_probe(OK, 11.0)
    assert m.state is State.HEALTHY and not m.recovered  # no dependent restarts either
    # same manager, bus restarted only: a stop seen then is someone's, as before
    m.on_unit(UnitView("inactive", "dead", "success", 0, 0, "new"), 12.0)
    assert m.state is State.STOPPED and m.due(30.0) is None


def test_dependency_recovery_restarts_healthy_dependents_only() -> None:
    stack = StackPlan(
        "s",
        1,
        (
            plan(name="riva"),
            plan(name="mas", depends_on={"riva": "healthy"}),
            plan(name="unity", depends_on={"riva": "started"}),
        ),
    )
    assert stack.dependents("riva") == ["mas"]
    mas = healthy_machine(stack.services[1])
    mas.on_dependency_recovered("riva")
    assert mas.next_wakeup() == float("-inf")  # due at once
    action = mas.due(10.0)
    assert action is not None and action.act is Act.RESTART and action.attempt == 0
    assert action.dependency == "riva" and mas.busy and mas.due(10.1) is None
    mas.on_action_done(action, True, 10.5)
    assert mas.state is State.STARTING and mas.restarts_in_window(10.5) == 0  # not a crash of its own
    assert not mas.busy and mas.due(10.6) is None  # once


def test_plan_json_round_trip() -> None:
    stack = StackPlan("s", 7, (plan(), plan(name="b", depends_on={"web": "healthy"})))
    assert StackPlan.from_json(json.loads(json.dumps(stack.to_json()))) == stack


def test_snapshot_has_what_status_shows() -> None:
    m = healthy_machine()
    snap = m.snapshot(now=0.0, wall=1000.0)
    assert snap["state"] == "HEALTHY" and snap["probe"]["outcome"] == "ok"
    assert snap["probe"]["latency_ms"] == 10.0 and snap["fatal_reason"] is None


# ---------------------------------------------------------------- sd_notify and journal encoding


def test_sd_notify_datagrams(tmp_path: Any) -> None:
    from sparc_agent.agent.notify import Notifier

    path = tmp_path / "notify"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    try:
        n = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000"})
        assert n.watchdog_s == 30.0
        n.ready("0/4 healthy")
        n.watchdog()
        n.status("4/4 healthy")
        n.status("4/4 healthy")  # unchanged: not sent again
        got = [server.recv(4096) for _ in range(3)]
        assert got == [b"READY=1\nSTATUS=0/4 healthy", b"WATCHDOG=1", b"STATUS=4/4 healthy"]
    finally:
        server.close()
    assert not Notifier({}).send(READY="1")


def test_journal_native_encoding() -> None:
    from sparc_agent.agent.journal import encode_journal, journal_field

    assert journal_field("service") == "SPARC_SERVICE"
    data = encode_journal(
        {"event": "restart", "service": "riva", "stack": "sparc-avatar", "reason": "two\nlines", "attempt": 2}
    )
    assert b"SPARC_SERVICE=riva\n" in data and b"SPARC_EVENT=restart\n" in data
    assert b"SPARC_ATTEMPT=2\n" in data and b"PRIORITY=6\n" in data
    value = b"two\nlines"
    assert b"SPARC_REASON\n" + struct.pack("<Q", len(value)) + value + b"\n" in data
    assert b"SYSLOG_IDENTIFIER=sparc-agent\n" in data


def test_json_log_lines() -> None:
    from sparc_agent.agent.journal import setup

    out = io.StringIO()
    log = setup("json", out)
    log.info("state", service="riva", state="HEALTHY")
    line = json.loads(out.getvalue())
    assert line["event"] == "state" and line["service"] == "riva" and line["level"] == "info"


# ---------------------------------------------------------------- probes that run apart (webrtc) and causes


def media(outcome: str, phase: str = "first_frame", cause: str = "") -> ProbeView:
    return ProbeView(outcome, 3.0, "no frame within 5s", phase=phase, source="webrtc", cause=cause)


def test_a_failure_caused_by_another_service_shows_but_never_restarts() -> None:
    m = healthy_machine()
    m.on_probe(media("failed", "ice_gather", cause="turn"), 10.0)
    assert m.state is State.UNHEALTHY and "ice_gather" in m.reason and "turn" in m.reason
    assert m.due(100.0) is None and m.restarts_total == 0
    m.on_probe(OK, 12.0)  # its own port answers: still not healthy while the media path fails
    assert m.state is State.UNHEALTHY
    m.on_probe(media("ok"), 70.0)
    assert m.state is State.HEALTHY


def test_a_failure_of_its_own_restarts_it_and_a_new_process_forgets_the_verdict() -> None:
    m = healthy_machine()
    m.on_probe(media("failed"), 10.0)  # one verdict of a probe run apart is confirmed already
    assert m.state is State.BACKOFF and "first_frame" in m.reason
    action = m.due(11.0)
    assert action is not None and action.act is Act.RESTART
    m.on_action_done(action, True, 11.5)
    m.on_unit(running("b"), 11.5)
    m.on_probe(OK, 12.0)
    assert m.state is State.HEALTHY and m.restarts_total == 1


def test_every_probe_result_is_an_event_for_listeners() -> None:
    m = healthy_machine()
    m.drain()
    m.on_probe(FAIL, 3.0)
    m.on_probe(media("failed", cause="signaling"), 4.0)
    probes = [e for e in m.drain() if e["event"] == "probe"]
    assert [(e["kind"], e["outcome"], e["phase"], e["cause"]) for e in probes] == [
        ("http", "failed", "", ""),
        ("webrtc", "failed", "first_frame", "signaling"),
    ]
    assert probes[0]["latency_s"] == 1.0


def test_the_runner_hands_every_event_to_its_listeners(tmp_path: Any) -> None:
    from sparc_agent.agent.runner import Agent, AgentOptions, StackRunner
    from sparc_agent.state.paths import Paths

    agent = Agent(AgentOptions(log_format="json"), Paths.from_env({"XDG_STATE_HOME": str(tmp_path)}))
    seen: list[tuple[str, str, str]] = []
    agent.listeners.append(lambda _stack, _event: 1 / 0)  # a broken listener is logged, nothing more
    agent.listeners.append(lambda stack, e: seen.append((stack, e["event"], e["state"])))
    runner = StackRunner(tmp_path, StackPlan("s", 1, (plan(),)), agent)
    runner.carry_over(None, systemd_grows_delay=False)
    runner.machines["web"].adopt_running(running(), 0.0)
    runner.flush(runner.machines["web"])
    runner.feed_probe("web", OK)
    assert seen == [("s", "state", "STARTING"), ("s", "probe", "STARTING"), ("s", "state", "HEALTHY")]


# ---------------------------------------------------------------- actions that end without an outcome


def unhealthy_restart_due(m: ServiceMachine, t: float) -> Action:
    m.on_probe(FAIL, t)
    m.on_probe(FAIL, t + 1.0)
    action = m.due(t + 10.0)
    assert action is not None and action.act is Act.RESTART and m.busy
    return action


def test_a_restarted_service_is_probed_sooner_but_its_failures_count_no_faster() -> None:
    """After a restart the container answers within ms of its start job: retry after 50 ms, doubling up
    to the fast interval (0.5 s), so HEALTHY follows at once; a failure counts at most every 0.5 s."""
    refused = ProbeView("failed", 0.002, "connection refused")
    for answers_at in (3, None):  # it answers at the 4th probe, or never
        m = healthy_machine()
        m.on_action_done(unhealthy_restart_due(m, 3.0), True, 14.0)
        assert m.state is State.STARTING and m.next_probe_at == 14.0
        gaps = []
        while m.state is State.STARTING:
            t = m.next_probe_at
            assert t is not None
            if len(gaps) == answers_at:
                m.on_probe(OK, t)
                break
            m.on_probe(refused, t)
            gaps.append(round(m.next_probe_at - t, 3) if m.next_probe_at is not None else None)
        if answers_at is not None:
            assert gaps == [0.048, 0.098, 0.198] and m.state is State.HEALTHY
        else:  # retries 2: the second failure that counts comes 0.75 s after the first, not sooner
            assert gaps[:4] == [0.048, 0.098, 0.198, 0.398] and m.state is State.BACKOFF
            assert m.reason.startswith("unhealthy") and m.fails == 2 and len(gaps) == 5


def test_a_cancelled_restart_leaves_nothing_in_flight_and_is_counted_once_it_shows() -> None:
    m = healthy_machine()
    action = unhealthy_restart_due(m, 3.0)
    m.on_action_cancelled(action, 14.0)
    assert not m.busy
    m.on_unit(UnitView("deactivating", "stop-sigterm", "success", 0, 100, "a"), 14.1)
    m.on_unit(running("b"), 14.5)  # systemd carried the restart out after all
    assert m.state is State.STARTING and m.restarts_total == 1
    m.on_probe(OK, 14.6)
    assert m.state is State.HEALTHY and m.probe_due(14.6 + m.plan.interval)


def test_a_cancelled_restart_that_never_happened_is_tried_again() -> None:
    m = healthy_machine()
    action = unhealthy_restart_due(m, 3.0)
    m.on_action_cancelled(action, 14.0)
    m.on_unit(running("a"), 14.5)  # the same process: nothing happened
    again = m.due(14.6)
    assert again is not None and again.act is Act.RESTART
    m.on_action_done(again, True, 15.0)
    m.on_unit(running("b"), 15.0)
    assert m.restarts_total == 1  # counted once


def test_a_cancelled_hold_owes_a_start() -> None:
    m = healthy_machine()
    m.on_unit(failed(), 10.0)
    m.on_unit(auto_restart(n=1), 10.0)  # 1st restart: systemd's
    m.on_unit(running("b", n=1), 11.0)
    m.on_probe(OK, 11.2)
    m.on_unit(failed(n=1, inv="b"), 20.0)
    m.on_unit(auto_restart(n=1, inv="b"), 20.0)
    hold = m.due(20.01)
    assert hold is not None and hold.act is Act.HOLD
    m.on_action_cancelled(hold, 20.05)
    m.on_unit(UnitView("inactive", "dead", "signal", 1, 0, "b"), 20.1)  # the stop did happen
    assert m.state is State.BACKOFF and not m.busy
    start = m.due(22.0)
    assert start is not None and start.act is Act.START


class FakeManager:
    """The calls an action makes, answering with `exc` or, with `release`, once it is set. The unit
    runs `main_pid`; after a restart began, the unit reads as `after_restart`, one state a read."""

    def __init__(self, exc: BaseException | None = None, main_pid: int = 0) -> None:
        self.exc = exc
        self.release = asyncio.Event()
        self.calls: list[str] = []
        self.main_pid = main_pid
        self.after_restart = ["deactivating"]

    async def unit_state(self, unit: str) -> UnitView:
        state = "active"
        if "restart" in self.calls:
            state = self.after_restart.pop(0) if len(self.after_restart) > 1 else self.after_restart[0]
            self.calls.append(f"saw {state}")
        return UnitView(state, "running", "success", 0, self.main_pid if state == "active" else 0, "a")

    async def _job(self, verb: str) -> str:
        self.calls.append(verb)
        if self.exc is not None:
            raise self.exc
        await self.release.wait()
        return "done"

    async def restart(self, unit: str) -> str:
        return await self._job("restart")

    async def start(self, unit: str) -> str:
        return await self._job("start")

    async def stop(self, unit: str) -> str:
        return await self._job("stop")

    async def kill(self, unit: str, sig: int, whom: str) -> None:
        self.calls.append(f"kill {sig} {whom}")


def runner_with_machine(tmp_path: Any, stop_grace: float = 0.05) -> tuple[Any, ServiceMachine]:
    from sparc_agent.agent.runner import Agent, AgentOptions, StackRunner
    from sparc_agent.state.paths import Paths

    agent = Agent(AgentOptions(log_format="json"), Paths.from_env({"XDG_STATE_HOME": str(tmp_path)}))
    runner = StackRunner(tmp_path, StackPlan("s", 1, (plan(stop_grace=stop_grace),)), agent)
    runner.carry_over(None, systemd_grows_delay=False)
    m = runner.machines["web"]
    m.adopt_running(running(), 0.0)
    m.on_probe(OK, 0.0)
    return runner, m


@pytest.mark.parametrize(
    "exc",
    [ManagerDisconnected("bus gone"), SystemdError("refused"), RuntimeError("a bug of ours")],
    ids=["disconnected", "refused", "bug"],
)
def test_no_way_out_of_an_action_leaves_it_in_flight(tmp_path: Any, exc: BaseException) -> None:
    runner, m = runner_with_machine(tmp_path)
    action = unhealthy_restart_due(m, 3.0)
    asyncio.run(runner._act(FakeManager(exc), m, action))
    assert not m.busy and m.due(1e6) is not None  # supervision goes on


def test_an_action_outlives_the_session_that_awaited_it(tmp_path: Any) -> None:
    runner, m = runner_with_machine(tmp_path)
    action = unhealthy_restart_due(m, 3.0)
    mgr = FakeManager()

    async def session_ends_meanwhile() -> None:
        session = asyncio.create_task(runner._act(mgr, m, action))
        await asyncio.sleep(0.1)
        session.cancel()  # a new generation of another stack, a reload
        with contextlib.suppress(asyncio.CancelledError):
            await session
        # hung, no container process known: all the unit's processes get SIGKILL, once the stop began
        assert m.busy and mgr.calls == ["restart", "saw deactivating", f"kill {signal.SIGKILL} all"]
        mgr.release.set()
        await asyncio.sleep(0.05)

    asyncio.run(session_ends_meanwhile())
    assert not m.busy and m.state is State.STARTING and m.restarts_total == 1


def test_a_hung_restart_kills_the_container_processes_once_the_stop_began_and_not_podman(
    tmp_path: Any,
) -> None:
    """stop_grace 0: SIGKILL at once for the container's processes (under conmon, the unit's MainPID),
    but only when systemd shows the stop begun (a kill before would be a crash, restarted by systemd
    and counted twice); never KillUnit, whose SIGKILL would hit podman's own stop command too."""
    from test_payload import alive, fake_conmon, wait_dead

    runner, m = runner_with_machine(tmp_path, stop_grace=0.0)
    action = unhealthy_restart_due(m, 3.0)
    with fake_conmon() as (conmon, sh, sleep):

        class Watching(FakeManager):
            async def unit_state(self, unit: str) -> UnitView:
                view = await super().unit_state(unit)
                if "restart" in self.calls:
                    self.calls.append(f"app alive {alive(sleep)}")
                return view

        mgr = Watching(main_pid=conmon)
        mgr.after_restart = ["active", "active", "deactivating"]

        async def restart() -> None:
            task = asyncio.create_task(runner._act(mgr, m, action))
            assert await asyncio.to_thread(wait_dead, sh, sleep)
            mgr.release.set()
            await task

        asyncio.run(restart())
        assert alive(conmon)
    alive_until_stop = ["saw active", "app alive True"] * 2 + ["saw deactivating", "app alive True"]
    assert mgr.calls == ["restart", *alive_until_stop]  # killed after that, and no KillUnit
    assert not m.busy and m.state is State.STARTING and m.restarts_total == 1


@pytest.mark.parametrize("seen", ["activating", "inactive"])
def test_a_restart_past_its_stop_is_not_killed_however_slow_the_start(tmp_path: Any, seen: str) -> None:
    """kill_after is about the stop: a restart job still running with the unit activating (or between
    stop and start) is a slow start of the new process, which nothing may kill."""
    runner, m = runner_with_machine(tmp_path)
    action = unhealthy_restart_due(m, 3.0)
    mgr = FakeManager()
    mgr.after_restart = [seen]

    async def slow_start() -> None:
        task = asyncio.create_task(runner._act(mgr, m, action))
        await asyncio.sleep(0.2)  # past stop_grace (0.05 s)
        mgr.release.set()
        await task

    asyncio.run(slow_start())
    assert mgr.calls == ["restart", f"saw {seen}"]  # no kill
    assert not m.busy and m.state is State.STARTING


def test_an_action_cut_short_by_the_agent_stopping_leaves_nothing_in_flight(tmp_path: Any) -> None:
    runner, m = runner_with_machine(tmp_path)
    action = unhealthy_restart_due(m, 3.0)

    async def agent_stops() -> None:
        session = asyncio.create_task(runner._act(FakeManager(), m, action))
        await asyncio.sleep(0.1)
        for task in runner.agent.actions:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await session

    asyncio.run(agent_stops())
    assert not m.busy


def test_a_oneshot_is_completed_never_probed_never_restarted() -> None:
    from pathlib import Path

    from sparc_agent.agent.supervisor import plan_from_profile
    from sparc_agent.profile.load import load_profile

    profile = load_profile(str(Path(__file__).parent / "profiles" / "loader.yaml")).profile
    stack = plan_from_profile(profile, 1)
    loader, server = stack.services
    assert loader.oneshot and loader.probe is None and loader.policy == "no"
    assert server.depends_on == {"fetch-models": "completed"} and not server.oneshot
    assert stack.dependents("fetch-models") == []  # `completed` dependents are not restarted for it

    exited = UnitView("active", "exited", "success", 0, 0, "a")  # RemainAfterExit=yes after exit 0
    m = ServiceMachine(loader, 0.0, rng=lambda: 0.0)
    m.adopt_running(exited, 0.0)
    assert m.state is State.COMPLETED and not m.probe_due(0.0) and m.next_wakeup() is None
    m.on_dependency_recovered("x")  # even if asked: a one-shot runs once per generation
    assert m.due(1.0) is None
    m.on_apply_finished(2.0)
    assert m.state is State.COMPLETED
    # a user manager restart: its dependents' starts pull it in (Requires=); not owed a start of its own
    m.on_manager_restart(3.0)
    m.on_unit(UnitView("inactive", "dead", "", 0, 0, ""), 3.0)
    assert m.due(100.0) is None and m.state is State.STOPPED

    # a run that fails (a later apply, or by hand) is shown and left alone
    f = ServiceMachine(loader, 0.0, rng=lambda: 0.0)
    f.adopt_running(exited, 0.0)
    f.on_unit(UnitView("activating", "start", "", 0, 7, "b"), 1.0)
    f.on_unit(UnitView("failed", "failed", "exit-code", 0, 0, "b"), 2.0)
    assert f.state is State.STOPPED and "one-shot is not restarted" in f.reason
    assert f.due(50.0) is None and f.restarts_total == 0
    f.on_unit(UnitView("active", "exited", "success", 0, 0, "c"), 60.0)  # run again by hand: done
    assert f.state is State.COMPLETED


# ---------------------------------------------------------------- the budget counts every restart, by whoever


def test_restarts_systemd_made_before_the_agent_looked_count() -> None:
    m = ServiceMachine(plan(max_restarts=3), 0.0, rng=lambda: 0.0)
    m.adopt_running(running(n=2), 0.0)  # first agent for this generation: two restarts it never saw
    assert m.restarts_in_window(0.0) == 2 and m.restarts_total == 2
    assert [e["by"] for e in m.drain() if e["event"] == "restart"] == ["systemd"]


def test_an_agent_restarted_counts_only_what_the_last_one_did_not() -> None:
    m = ServiceMachine(plan(max_restarts=3), 10.0, rng=lambda: 0.0)
    m.adopt([4.0, 6.0], n_restarts_seen=2)  # recorded by the agent before: both systemd's
    m.adopt_running(running(n=3), 10.0)  # one more while no agent ran
    assert m.restarts_in_window(10.0) == 3


def test_a_state_file_of_an_older_agent_is_not_counted_twice() -> None:
    m = ServiceMachine(plan(max_restarts=3), 10.0, rng=lambda: 0.0)
    m.adopt([4.0, 6.0], n_restarts_seen=None)  # no record of NRestarts: take the unit's as counted
    m.adopt_running(running(n=2), 10.0)
    assert m.restarts_in_window(10.0) == 2


def test_a_crash_loop_that_systemd_restarts_goes_fatal_at_exactly_max_restarts() -> None:
    m = healthy_machine(plan(probe=None, max_restarts=3, backoff_initial=1.0, backoff_max=1.0))
    t = 10.0
    for n in range(1, 10):  # RestartSec equals every backoff: systemd restarts, the agent only counts
        m.on_unit(failed(n=n - 1, inv=str(n)), t)
        m.on_unit(auto_restart(n=n - 1, inv=str(n)), t)
        if m.state is State.FATAL:
            break
        m.on_unit(running(inv=str(n + 100), n=n), t + 1.0)  # NRestarts ticks with the restart
        assert m.due(t + 1.0) is None
        t += 2.0
    assert m.state is State.FATAL and m.restarts_total == 3
    stop = m.due(t)
    assert stop is not None and stop.act is Act.STOP  # and systemd's 4th is cancelled


def test_a_new_generation_keeps_the_budget_unless_fatal() -> None:
    m = healthy_machine(plan(max_restarts=3))
    m.on_unit(failed(), 1.0)
    m.on_unit(auto_restart(), 1.0)
    m.on_unit(running("b", n=1), 2.0)
    m.on_new_generation(3.0)
    assert m.restarts_in_window(3.0) == 1  # restarts during or before an apply still count
    f = healthy_machine(plan(max_restarts=0))
    f.on_unit(failed(result="exit-code"), 1.0)
    assert f.state is State.FATAL
    f.on_new_generation(2.0)
    assert f.state is State.STOPPED and f.restarts_in_window(2.0) == 0  # the apply started it afresh


def test_a_reconnect_says_which_one_went() -> None:
    from sparc_agent.agent.runner import (
        BUS_RESTARTED,
        CONNECTION_DROPPED,
        MANAGER_RESTARTED,
        _which_went,
    )

    assert _which_went((1, "bus-a"), (2, "bus-b")) == MANAGER_RESTARTED
    assert _which_went((1, "bus-a"), (1, "bus-b")) == BUS_RESTARTED
    assert _which_went((1, "bus-a"), (1, "bus-a")) == CONNECTION_DROPPED
    assert "user manager" not in BUS_RESTARTED.split(";")[0]


def test_a_second_hang_in_an_episode_waits_the_backoff() -> None:
    m = healthy_machine(plan(backoff_initial=1.0))
    for t0 in (3.0, 20.0):
        m.on_probe(FAIL, t0)
        m.on_probe(FAIL, t0 + 1.0)
        assert m.state is State.BACKOFF
        if t0 == 20.0:
            assert m.backoff_until == pytest.approx(22.0)  # attempt 2: backoff.initial
            break
        action = m.due(t0 + 1.0)
        assert action is not None
        m.on_action_done(action, True, t0 + 1.5)
        m.on_unit(running("b"), t0 + 1.5)
        m.on_probe(OK, t0 + 2.0)


def test_a_crash_seen_first_as_inactive_is_a_restart_not_a_stop() -> None:
    m = healthy_machine()
    m.on_unit(UnitView("inactive", "dead", "signal", 1, 0, "a"), 10.0)  # failed + auto-restart coalesced
    assert m.state is State.BACKOFF and m.restarts_total == 1
    m.on_unit(UnitView("activating", "start", "signal", 1, 0, "b"), 11.0)
    m.on_unit(running("b", n=1), 11.2)
    assert m.state is State.STARTING
    assert not [e for e in m.drain() if e.get("state") == "STOPPED"]


def test_a_crash_still_inactive_when_its_backoff_ends_is_started_not_stopped() -> None:
    m = healthy_machine()
    m.on_unit(failed(result="exit-code"), 10.0)
    m.on_unit(UnitView("inactive", "dead", "exit-code", 0, 0, "a"), 11.0)  # no restart of systemd's
    action = m.due(11.0)
    assert m.state is State.BACKOFF and action is not None and action.act is Act.START
    m.on_action_done(action, True, 11.3)
    assert m.restarts_total == 1
    assert not [e for e in m.drain() if e.get("state") == "STOPPED"]
