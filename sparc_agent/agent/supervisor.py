"""Supervision logic: one state machine per service, pure (no I/O, no clock of its own).

    STARTING ──probe ok──▶ HEALTHY ──retries failures──▶ UNHEALTHY ──▶ BACKOFF ──delay──▶ restart ─▶ STARTING
        ▲                    ▲  └────────probe ok (while UNHEALTHY/BACKOFF)──────┘            │
        └── unit active ─────┘                                         budget spent ─▶ FATAL ◀┘
    STOPPED: the unit was stopped by someone (or failed under policy `no`): observed, never restarted.

The agent (sparc_agent/agent.py) feeds it unit states from D-Bus, probe results and the time, and
carries out the one action it may return: restart (or hold/start, see below). Everything here is
testable with a fake clock: every method takes `now` (monotonic seconds).

Not fighting systemd: a container's unit has `Restart=` from the policy, `RestartSec=backoff.initial`
and `StartLimitBurst=max_restarts+1` within `StartLimitIntervalSec=window` (the renderer). So

- a crash is systemd's to restart. The machine never restarts a unit that is `activating` or in
  `auto-restart`; it only counts systemd's restarts (NRestarts) toward the crash-loop budget;
- systemd 252 cannot grow its delay (RestartSteps= came in 254). When the policy's delay for an attempt
  is longer than RestartSec, the machine asks to *hold* the pending auto-restart (StopUnit on a unit
  waiting in auto-restart only cancels the timer) and to start the unit itself when its backoff ends;
- systemd's own `start-limit-hit` is FATAL too: both count the same starts, so they agree.

Probe timing follows kubelet (interval between probe starts, jitter before the first), except that a
failing or starting service is re-probed every `min(interval, FAST_INTERVAL_S)`, like Envoy's
`unhealthy_edge_interval`: a hang is confirmed in about `retries * timeout`, not `retries * interval`,
while a healthy service still costs one probe per interval. A starting one is re-probed sooner still
(FIRST_RETRY_S, doubling), so HEALTHY follows a restart within ms; those retries count no more often.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sparc_agent.state.plan import ServicePlan as ServicePlan
from sparc_agent.state.plan import StackPlan as StackPlan

if TYPE_CHECKING:  # the model (pydantic) stays out of the agent process: plans come as JSON
    from sparc_agent.profile.model import Profile

# a starting or failing service is probed this often (at most every `interval`)
FAST_INTERVAL_S = 0.5
# ... a starting one first this soon after a failed probe, twice as long each time up to FAST_INTERVAL_S:
# a restarted container answers a few ms after its start job ends, and HEALTHY should follow at once
FIRST_RETRY_S = 0.05
# at most this much random delay before an adopted service's first probe (kubelet jitters too)
MAX_JITTER_S = 1.0
# a restart for another reason than a hang (a dependency's) SIGKILLs the container after this long
KILL_AFTER_S = 2.0


class State(enum.StrEnum):
    STARTING = "STARTING"
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    BACKOFF = "BACKOFF"
    FATAL = "FATAL"
    STOPPED = "STOPPED"
    COMPLETED = "COMPLETED"  # a one-shot that ran to completion: never probed, never restarted


# ---------------------------------------------------------------- the plan (what to supervise: state.plan)


def plan_from_profile(profile: Profile, generation: int) -> StackPlan:
    """The supervision plan of a validated profile; apply records it in each generation's meta.json."""
    from sparc_agent.profile.rules import probe_pod, start_order
    from sparc_agent.render import Names

    names = Names(profile.name)
    services = []
    for name in start_order(profile):
        svc = profile.services[name]
        health, policy = svc.health, svc.restart
        probe = None
        timing: dict[str, Any] = {}
        if health is not None:
            probe = {"kind": health.kind, **health.probe.model_dump(mode="json"), "timeout_s": health.timeout}
            if pod := probe_pod(profile, name):
                probe["pod"] = pod
            timing = dict(
                apart=[{"kind": k, **b.model_dump(mode="json")} for k, b in health.apart.items()],
                interval=health.interval,
                timeout=health.timeout,
                retries=health.retries,
                start_period=health.start_period,
            )
        services.append(
            ServicePlan(
                name=name,
                unit=names.service_unit(name),
                container=names.container(name),
                probe=probe,
                policy="no" if svc.oneshot else policy.policy,
                backoff_initial=policy.backoff.initial,
                backoff_max=policy.backoff.max,
                multiplier=policy.backoff.multiplier,
                max_restarts=policy.max_restarts,
                window=policy.window,
                stop_grace=policy.stop_grace,
                depends_on=dict(svc.depends_on),
                oneshot=svc.oneshot,
                gpu=svc.gpus is not None,
                gpu_memory_budget=svc.resources.gpu_memory if svc.resources is not None else None,
                **timing,
            )
        )
    return StackPlan(profile.name, generation, tuple(services))


# ---------------------------------------------------------------- inputs and outputs


@dataclass(frozen=True)
class UnitView:
    """The part of systemd.UnitState the machine reads (a UnitState fits as it is)."""

    active_state: str
    sub_state: str
    result: str = ""
    n_restarts: int = 0
    main_pid: int = 0
    invocation_id: str = ""
    job: int = 0  # a job systemd has queued for the unit (0: none)


@dataclass(frozen=True)
class ProbeView:
    """One probe result. `source` "" is the service's own health probe (run by the runner on the plan's
    timing); another source (e.g. "webrtc") is a probe that runs apart, on its own schedule, and feeds
    its verdicts in: each of its failures counts as confirmed, and the service is HEALTHY only while no
    source fails. `cause` names another service whose failure explains this one's (the signaling server,
    the TURN server): the service is UNHEALTHY for it, but restarting it would not help, so it is not."""

    outcome: str  # ok, failed, error (sparc_agent.probes.ProbeOutcome values)
    latency_s: float
    detail: str = ""
    phase: str = ""  # how far the probe got (webrtc: signaling, answer, ice_gather, ...)
    source: str = ""
    cause: str = ""
    first_frame_s: float | None = None  # webrtc: seconds to the first decoded video frame (metrics)


class Act(enum.StrEnum):
    RESTART = "restart"  # RestartUnit: the service is unhealthy or failed
    HOLD = "hold"  # StopUnit a unit waiting in auto-restart: the policy's delay is longer than systemd's
    START = "start"  # StartUnit after a hold, or after the user manager restarted
    STOP = "stop"  # FATAL while systemd would keep restarting: end the loop


@dataclass(frozen=True)
class Action:
    act: Act
    reason: str
    attempt: int
    dependency: str = ""  # a restart because this `healthy` dependency recovered: not a crash of ours
    kill_after: float = KILL_AFTER_S  # RESTART: SIGKILL the container's processes if the stop takes longer


# What the machine tells its listeners (and the journal): dicts with "event", "service", "state" and
# per event: state (previous, reason), restart (by: agent|systemd, reason, attempt, ok), probe (kind,
# outcome, latency_s, phase, detail, source, cause, first_frame_s; for listeners only, not logged),
# probe_failed, probe_error, restart_skipped, reset.
Event = dict[str, Any]


# ---------------------------------------------------------------- the machine


class ServiceMachine:
    """One service. Feed it `on_unit`, `on_probe`, `on_action_done`; ask `due(now)` for an action.

    All sub-state (the action in flight, a held auto-restart, a start owed after a manager restart, a
    dependency's recovery) lives here, changed only by these methods: the runner does the I/O."""

    def __init__(
        self,
        plan: ServicePlan,
        now: float,
        *,
        rng: Callable[[], float] = random.random,
        systemd_grows_delay: bool = False,
    ) -> None:
        self.plan = plan
        self.state = State.STOPPED
        self.reason = "not seen yet"
        self.since = now
        self.fails = 0  # consecutive failed probes
        self.restarts: deque[float] = deque()  # restart times within the window (ours and systemd's)
        self.restarts_total = 0
        self.attempt = 0  # restarts in this episode: the backoff exponent; reset by a healthy window
        self.backoff_until: float | None = None
        self.healthy_since: float | None = None
        self.started_at = now  # when the unit last became active (start_period counts from here)
        self.next_probe_at: float | None = None
        self.last_probe: ProbeView | None = None
        self.last_probe_at: float | None = None
        self.unit: UnitView | None = None
        self.events: list[Event] = []
        self._rng = rng
        self._systemd_grows_delay = systemd_grows_delay
        self._inflight: Action | None = None  # an action of ours the runner is carrying out
        self._unconfirmed = False  # a restart of ours was cancelled before we saw whether it happened
        self._holding = False  # we stopped systemd's pending auto-restart and owe a start
        self._owed_start = False  # the user manager restarted under the running service: start it again
        self._dependency: str | None = None  # a `healthy` dependency recovered: a restart is due
        self._recovered = False  # HEALTHY after a restart: `healthy` dependents are due one
        self._restarted = False  # a restart happened since the last HEALTHY
        self._failing: dict[str, ProbeView] = {}  # other probe sources whose last verdict failed
        # systemd's NRestarts already counted; 0 at first: restarts systemd made before we looked count too
        # (-1: unknown, the first value seen is taken as counted)
        self._n_restarts_seen = 0
        self._fatal_invocation = ""
        self.backoff_delay = 0.0  # the delay of the current BACKOFF
        self._episode_counted = False  # systemd's NRestarts already counted this episode's restart
        self._start_retries = 0  # failed probes since STARTING: the next one comes sooner (FIRST_RETRY_S)
        self._counted_at: float | None = None  # the last failure counted while STARTING

    # ------------------------------------------------------------ helpers

    @property
    def busy(self) -> bool:
        """An action of ours is in flight: no probes, no second action."""
        return self._inflight is not None

    @property
    def recovered(self) -> bool:
        return self._recovered

    def take_recovered(self) -> bool:
        """True once after the service became HEALTHY again after a restart (its dependents are due one)."""
        recovered, self._recovered = self._recovered, False
        return recovered

    def _emit(self, event: str, now: float, **fields: Any) -> None:
        self.events.append({"event": event, "service": self.plan.name, "state": str(self.state), **fields})

    def _to(self, state: State, now: float, reason: str, **fields: Any) -> None:
        if state is self.state and reason == self.reason:
            return
        old = self.state
        self.state, self.reason, self.since = state, reason, now
        if state is not State.HEALTHY:
            self.healthy_since = None
        self._emit("state", now, previous=str(old), reason=reason, **fields)

    def _prune(self, now: float) -> None:
        while self.restarts and now - self.restarts[0] >= self.plan.window:
            self.restarts.popleft()

    def restarts_in_window(self, now: float) -> int:
        self._prune(now)
        return len(self.restarts)

    def _count_restart(self, now: float, n: int = 1) -> None:
        for _ in range(n):
            self.restarts.append(now)
        self.restarts_total += n
        self.attempt += n
        self._restarted = True

    def _budget_spent(self, now: float) -> bool:
        return self.restarts_in_window(now) >= self.plan.max_restarts

    def _fatal(self, now: float, reason: str) -> None:
        self._fatal_invocation = self.unit.invocation_id if self.unit else ""
        self.backoff_until = None
        self.next_probe_at = None
        self._to(State.FATAL, now, reason, attempt=self.attempt)

    def _fatal_budget(self, now: float, why: str) -> None:
        self._fatal(now, f"{self.restarts_in_window(now)} restarts within {self.plan.window:g}s{why}")

    def _fast(self) -> float:
        return min(self.plan.interval, FAST_INTERVAL_S)

    def _retry_after(self) -> float:
        """From a failed probe's start to the next one's: fast, and faster still while STARTING."""
        if self.state is not State.STARTING:
            return self._fast()
        self._start_retries += 1
        return min(self._fast(), FIRST_RETRY_S * 2.0 ** (self._start_retries - 1))

    @property
    def has_probe(self) -> bool:
        return self.plan.probe is not None

    # ------------------------------------------------------------ inputs

    def adopt(self, restart_times: Iterable[float] = (), n_restarts_seen: int | None = 0) -> None:
        """Carry over what an agent that ran before recorded for this generation: the restart times
        (monotonic, this process) and how many of systemd's restarts (NRestarts) they include (None:
        not recorded, by an older agent: take what the unit shows when first seen as counted)."""
        for t in sorted(restart_times):
            self.restarts.append(t)
        self.attempt = len(self.restarts)
        self._n_restarts_seen = -1 if n_restarts_seen is None else n_restarts_seen

    def on_manager_restart(self, now: float) -> None:
        """The user manager was replaced while we were away (`systemctl --user exit`, logout and login):
        its units stopped with it, by nobody's choice, and the new manager starts none of them. A service
        that was meant to run (not STOPPED, not FATAL) is owed a start; not a crash, so not counted.
        The next `on_unit` (a fresh snapshot from the new manager) decides."""
        self.unit = None  # the old manager's view, NRestarts and InvocationID mean nothing any more
        self._n_restarts_seen = 0
        self._inflight = None
        self._holding = self._unconfirmed = False
        self._dependency = None
        self.next_probe_at = None
        self.backoff_until = None
        # (a one-shot ran for this generation; a dependent's start pulls it in again through Requires=)
        self._owed_start = self.state not in (State.STOPPED, State.FATAL, State.COMPLETED)

    def on_apply_finished(self, now: float) -> None:
        """An apply just ran on the stack: what it did is not a failure of ours to count."""
        if self.state in (State.FATAL, State.STOPPED) or self.unit is None:
            return
        if self.unit.active_state == "active":
            self.fails = 0
            self.backoff_until = None
            self._enter_starting(now, "apply finished")

    def on_unit(self, unit: UnitView, now: float) -> None:
        prev = self.unit
        self.unit = unit
        seen = self._n_restarts_seen if self._n_restarts_seen >= 0 else unit.n_restarts
        self._n_restarts_seen = unit.n_restarts
        # NRestarts only grows, until a start that is not systemd's own or a ResetFailed zeroes it
        systemd_restarted = unit.n_restarts > seen
        if self.state is State.FATAL:
            self._on_unit_while_fatal(unit, systemd_restarted, now)
        else:
            self._on_unit_state(unit, prev, systemd_restarted, now)
        # counted after the state change: NRestarts ticks on entering auto-restart, in one episode
        if systemd_restarted:
            self._count_systemd_restarts(unit.n_restarts - seen, unit, prev, now)

    def _count_systemd_restarts(self, n: int, unit: UnitView, prev: UnitView | None, now: float) -> None:
        self._count_restart(now, n)
        if self.state is State.BACKOFF:
            self._episode_counted = True
        self._emit(
            "restart",
            now,
            by="systemd",
            reason=f"systemd Restart= after {unit.result or (prev.result if prev else '?')}",
            attempt=self.attempt,
            restarts=self.restarts_in_window(now),
        )
        if self.restarts_in_window(now) > self.plan.max_restarts and self.state is not State.FATAL:
            self._fatal_budget(now, "")

    def _on_unit_while_fatal(self, unit: UnitView, systemd_restarted: bool, now: float) -> None:
        """Someone started it by hand (`sparc-agent restart`, systemctl): a fresh start, a fresh budget."""
        manual = (
            unit.active_state == "active"
            and unit.invocation_id != self._fatal_invocation
            and not self.busy
            and not systemd_restarted
        )
        if manual:
            self.restarts.clear()
            self.attempt = 0
            self._enter_starting(now, "started by hand: FATAL cleared")

    def _on_unit_state(
        self, unit: UnitView, prev: UnitView | None, systemd_restarted: bool, now: float
    ) -> None:
        a, s = unit.active_state, unit.sub_state
        if a == "failed" and unit.result == "start-limit-hit":
            self._fatal(now, f"systemd start limit hit (StartLimitBurst={self.plan.max_restarts + 1})")
            return
        if self.busy:
            return  # our own action: its outcome arrives through on_action_done
        if self._owed_start and a == "inactive":
            self.backoff_until, self.backoff_delay = now, 0.0
            self._to(State.BACKOFF, now, "user manager restarted: start again", attempt=0, backoff=0.0)
            return
        if a != "deactivating":
            self._owed_start = False  # it runs, or fails, again: the usual rules from here
        if a == "active":
            self._unit_active(unit, prev, now)
        elif a in ("activating", "reloading") or s == "auto-restart":
            # systemd is (re)starting it: never a second restart from us
            if s == "auto-restart" and not self._holding and self.plan.policy != "no":
                self._on_crash(now, unit, systemd_restarting=True)
        elif a == "failed":
            if self.plan.policy == "no":
                why = "a one-shot is not restarted" if self.plan.oneshot else "policy no: not restarted"
                self._to(State.STOPPED, now, f"failed ({unit.result}); {why}")
            else:
                self._on_crash(now, unit, systemd_restarting=False)
        elif a == "inactive" and not self._holding and self.state is not State.BACKOFF:
            # systemd 252 passes through inactive/dead between auto-restart and the new start: when the
            # signals of a crash come together, that is the first we see of it. A restart, not a stop.
            crashed = unit.result not in ("", "success") or systemd_restarted
            if crashed and self.plan.policy != "no":
                self._on_crash(now, unit, systemd_restarting=True)
            else:
                self.next_probe_at = None
                self._to(State.STOPPED, now, "stopped (not by the agent)")

    def _unit_active(self, unit: UnitView, prev: UnitView | None, now: float) -> None:
        # only a transition into active is news: other property changes of a running unit are not
        new_invocation = prev is not None and unit.invocation_id != prev.invocation_id and unit.invocation_id
        became_active = prev is None or prev.active_state != "active" or new_invocation
        if self._unconfirmed and new_invocation:
            self._unconfirmed = False
            if self._episode_counted:
                self._episode_counted = False
            else:
                self._count_restart(now)
            self._emit("restart", now, by="agent", reason=self.reason, attempt=self.attempt, ok=True)
        if became_active or self._holding:
            self._holding = False
            self.backoff_until = None
            self._enter_starting(now, "unit active")

    def _on_crash(self, now: float, unit: UnitView, *, systemd_restarting: bool) -> None:
        """The unit failed. systemd may be restarting it; else we will, after the backoff."""
        self.next_probe_at = None
        self.fails = 0
        if self.state is State.BACKOFF:
            return  # already waiting (systemd 252 shows failed, then auto-restart, for one crash)
        if self._budget_spent(now) and not systemd_restarting:
            self._fatal_budget(now, f"; last: {unit.result}")
            return
        # systemd's RestartSec is backoff.initial: when the policy wants longer, hold its restart
        self._holding = False
        self._enter_backoff(now, f"unit {unit.active_state} ({unit.result or unit.sub_state})")

    def _enter_backoff(self, now: float, reason: str, *, hung: bool = False) -> None:
        """Wait the policy's next backoff before restart attempt `attempt + 1`. A hung service (it runs,
        but failed its probes) is restarted at once the first time: its probes already took their time."""
        delay = self.plan.backoff(self.attempt + (0 if hung else 1)) if self.attempt or not hung else 0.0
        self.backoff_until, self.backoff_delay, self._episode_counted = now + delay, delay, False
        self._to(State.BACKOFF, now, reason, attempt=self.attempt + 1, backoff=round(delay, 3))

    def _enter_starting(self, now: float, reason: str) -> None:
        self.fails = 0
        self._start_retries, self._counted_at = 0, None
        self.started_at = now
        self._failing.clear()  # a new process: the other sources' old verdicts were about the last one
        if self.plan.oneshot:  # active means exited 0 (RemainAfterExit=yes): done for this generation
            self.next_probe_at = None
            self._to(State.COMPLETED, now, "ran to completion")
            return
        if self.unit is not None and not self.has_probe:
            self._healthy(now, "running (no probe)")
            return
        self.next_probe_at = now + (
            self._rng() * min(self.plan.interval, MAX_JITTER_S) if reason == "adopted" else 0.0
        )
        self._to(State.STARTING, now, reason)

    def _healthy(self, now: float, reason: str) -> None:
        self.fails = 0
        self.backoff_until = None
        if self.state is not State.HEALTHY:
            self._to(State.HEALTHY, now, reason)
            self.healthy_since = now
            if self._restarted:
                self._recovered = True
                self._restarted = False
        self.next_probe_at = now + self.plan.interval if self.has_probe else None

    def adopt_running(self, unit: UnitView, now: float) -> None:
        """The agent just started: take the unit as it is (never restart what runs). Restarts systemd
        made before (NRestarts beyond what an earlier agent recorded) count toward the budget."""
        if unit.active_state != "active":
            self.on_unit(unit, now)  # judged as a change: failed, restarting, stopped
            return
        self.unit = unit
        self._enter_starting(now, "adopted")
        seen = self._n_restarts_seen if self._n_restarts_seen >= 0 else unit.n_restarts
        self._n_restarts_seen = unit.n_restarts
        if unit.n_restarts > seen:
            self._count_systemd_restarts(unit.n_restarts - seen, unit, None, now)

    def probe_due(self, now: float) -> bool:
        return (
            self.has_probe
            and not self.busy
            and self.next_probe_at is not None
            and now >= self.next_probe_at
            and self.unit is not None
            and self.unit.active_state == "active"
        )

    def on_probe(self, result: ProbeView, now: float) -> None:
        self._emit(
            "probe",
            now,
            kind=self._kind(result),
            outcome=result.outcome,
            latency_s=result.latency_s,
            phase=result.phase,
            detail=result.detail,
            source=result.source,
            cause=result.cause,
            first_frame_s=result.first_frame_s,
        )
        if not result.source:
            self.last_probe, self.last_probe_at = result, now
        if self.state in (State.FATAL, State.STOPPED) or self.busy:
            if not result.source:
                self.next_probe_at = None
            return
        if result.outcome == "error":
            # our bug, not the service's: never a reason to restart; say so and keep probing
            self._emit("probe_error", now, probe=result.detail)
            if not result.source:
                self.next_probe_at = now + self.plan.interval
            return
        if result.source:
            self._on_source_probe(result, now)
        elif result.outcome == "ok":
            self._on_probe_ok(now)
        else:
            self._on_probe_failed(result, now)

    def _kind(self, result: ProbeView) -> str:
        return result.source or (str(self.plan.probe["kind"]) if self.plan.probe else "")

    def _on_probe_ok(self, now: float) -> None:
        if self._failing:  # another source still fails: not healthy, however well this one answers
            self.fails = 0
            self.next_probe_at = now + self.plan.interval
            return
        self._healthy(now, f"{self._kind(ProbeView('ok', 0.0))} probe ok".strip())

    def _on_source_probe(self, result: ProbeView, now: float) -> None:
        """A verdict from a probe that runs apart (e.g. webrtc): already confirmed by its own run."""
        if result.outcome == "ok":
            self._failing.pop(result.source, None)
            if not self._failing and self.state is State.UNHEALTHY:
                self._healthy(now, f"{result.source} probe ok")
            return
        self._failing[result.source] = result
        self._unhealthy(result, now)

    def _on_probe_failed(self, result: ProbeView, now: float) -> None:
        # start to start, like the interval: after a probe that timed out, the next one starts at once
        self.next_probe_at = now + max(0.0, self._retry_after() - result.latency_s)
        if self.state is State.STARTING:
            if now - self.started_at < self.plan.start_period:
                return  # failures in the start period do not count
            if self._counted_at is not None and now - self._counted_at < self._fast():
                return  # a starting service's quicker retries count no more often than the usual ones
            self._counted_at = now
        self.fails += 1
        if self.state is State.HEALTHY:
            self._emit("probe_failed", now, probe=result.detail, fails=self.fails, retries=self.plan.retries)
        if self.fails < self.plan.retries or self.state in (State.UNHEALTHY, State.BACKOFF):
            return
        self._unhealthy(result, now)

    def _unhealthy(self, result: ProbeView, now: float) -> None:
        """Confirmed unhealthy: restart after the backoff, unless policy, budget or cause say otherwise."""
        what = f"{result.phase}: {result.detail}" if result.phase else result.detail
        if result.cause:
            # another service broke this one: restarting it would not help, so it only shows
            self.backoff_until = None
            self._to(State.UNHEALTHY, now, f"{what} (cause: {result.cause})", probe=result.detail)
            return
        if self.state is State.BACKOFF:
            return
        self._to(State.UNHEALTHY, now, f"{self.fails or 1} probes failed: {what}", probe=result.detail)
        if self.plan.policy == "no":
            self._emit("restart_skipped", now, reason="policy no")
        elif self._budget_spent(now):
            self._fatal_budget(now, f"; still unhealthy: {what}")
        else:
            self._enter_backoff(now, f"unhealthy: {what}", hung=True)

    def on_dependency_recovered(self, dep: str) -> None:
        """A `healthy` dependency came back after a restart: this one is due a restart too (not counted)."""
        self._dependency = dep

    # ------------------------------------------------------------ actions

    def due(self, now: float) -> Action | None:
        """The action to take now, if any; the caller runs it, then calls on_action_done."""
        self._reset_if_healthy_long(now)
        action = self._next_action(now)
        if action is not None:
            self._inflight, self._unconfirmed = action, False
        return action

    def _next_action(self, now: float) -> Action | None:
        if self.busy:
            return None
        unit = self.unit
        if self.state is State.FATAL:
            self._dependency = None
            if unit is not None and unit.sub_state == "auto-restart":
                # FATAL means no more restarts, systemd's included
                return Action(Act.STOP, "FATAL: cancel systemd's pending restart", self.attempt)
            return None
        if self._dependency is not None:
            dep, self._dependency = self._dependency, None
            if self.state is not State.STOPPED and self.plan.policy != "no":
                return Action(Act.RESTART, f"dependency {dep} recovered", 0, dependency=dep)
        if self.state is State.BACKOFF and unit is not None:
            return self._backoff_action(unit, now)
        return None

    def _backoff_action(self, unit: UnitView, now: float) -> Action | None:
        restarting = unit.active_state == "activating" or unit.sub_state == "auto-restart"
        if restarting and not self._holding:
            # systemd's restart is pending: let it be, unless the policy wants a longer pause
            longer = self.backoff_until is not None and self.backoff_delay > self.plan.backoff_initial
            if not self._systemd_grows_delay and longer and unit.sub_state == "auto-restart":
                return Action(Act.HOLD, "policy backoff longer than RestartSec", self.attempt + 1)
            return None
        if self.backoff_until is None or now < self.backoff_until:
            return None
        if self._owed_start:
            return Action(Act.START, self.reason, 0)
        if unit.active_state == "inactive" and self._episode_counted and not self._holding:
            if unit.job:
                # systemd's restart job is queued (NRestarts ticked in this episode): its start comes
                # next, even when systemd 252 shows the unit inactive/dead with result "success" on the way
                return None
            # its restart job ended without a start (a dependency failed: the pod could not bind its
            # ports). That restart was counted; the next one is ours, after the backoff, counted too
            self._episode_counted = False
        elif unit.active_state == "inactive" and unit.result in ("", "success") and not self._holding:
            # not failed, not restarting, not held by us: someone stopped it meanwhile
            self.backoff_until = None
            self._to(State.STOPPED, now, "stopped (not by the agent)")
            return None
        if self._budget_spent(now):
            self._fatal_budget(now, "")
            return None
        if self._holding or unit.active_state != "active":
            return Action(Act.START, self.reason, self.attempt + 1)
        # it runs but failed its probes: hung, so no long wait for a SIGTERM it may never act on
        return Action(Act.RESTART, self.reason, self.attempt + 1, kill_after=self.plan.stop_grace)

    def on_action_cancelled(self, action: Action, now: float) -> None:
        """The runner could not see `action` through (the bus went away, the agent is stopping): systemd
        may or may not have acted. Nothing stays in flight; what the unit does next decides."""
        self._inflight = None
        self._emit("action_cancelled", now, act=str(action.act), reason=action.reason)
        if action.act is Act.HOLD:
            self._holding = True  # if systemd's restart was stopped, a start is owed (else it runs: cleared)
        elif action.act in (Act.RESTART, Act.START) and action.attempt > 0:
            self._unconfirmed = True  # a new process of the unit will show that it happened: count it then

    def on_action_done(self, action: Action, ok: bool, now: float, detail: str = "") -> None:
        self._inflight = None
        if action.act is Act.HOLD:
            self._holding = ok
            return
        if action.act is Act.STOP:
            return
        if action.dependency:
            self._emit("restart", now, by="agent", reason=action.reason, attempt=0, ok=ok, detail=detail)
            if ok:
                self._enter_starting(now, f"restarted ({action.reason})")
            return
        self._holding = False
        if self._owed_start:  # the start after a manager restart: not a restart of a failed service
            self._owed_start = False
            if ok:
                self.backoff_until = None
                self._emit("restart", now, by="agent", reason=action.reason, attempt=0, ok=ok, detail=detail)
                self._enter_starting(now, f"started ({action.reason})")
                return
        if self._episode_counted:  # systemd's NRestarts counted it when it entered auto-restart
            self._episode_counted = False
        else:
            self._count_restart(now)
        self.backoff_until = None
        self._emit(
            "restart", now, by="agent", reason=action.reason, attempt=self.attempt, ok=ok, detail=detail
        )
        if ok:
            self._enter_starting(now, f"restarted ({action.reason})")
        elif self._budget_spent(now):
            self._fatal(now, f"restart failed: {detail}")
        else:
            self._enter_backoff(now, f"restart failed: {detail}")

    def on_new_generation(self, now: float) -> None:
        """Its plan is unchanged in a new generation: a FATAL service was started again by the apply (a
        ResetFailed, systemd's budget cleared too), so it gets a fresh budget; any other keeps counting."""
        if self.state is not State.FATAL:
            return
        self.restarts.clear()
        self.attempt = 0
        self.backoff_until = None
        self._holding = False
        self._to(State.STOPPED, now, "FATAL cleared by a new generation")

    def _reset_if_healthy_long(self, now: float) -> None:
        if (
            self.state is State.HEALTHY
            and self.healthy_since is not None
            and now - self.healthy_since >= self.plan.window
            and (self.attempt or self.restarts)
        ):
            self.restarts.clear()
            self.attempt = 0
            self._emit("reset", now, reason=f"healthy for {self.plan.window:g}s: restart count reset")

    def next_wakeup(self, after: float | None = None) -> float | None:
        """When `due`/`probe_due` may next have something to do (None: only an input can change that).
        Times up to `after` were already looked at then (they wait for an input, e.g. a unit change)."""
        times = [t for t in (self.next_probe_at, self.backoff_until) if t is not None]
        if self.state is State.HEALTHY and self.healthy_since is not None and (self.attempt or self.restarts):
            times.append(self.healthy_since + self.plan.window)
        if self._dependency is not None:
            times.append(float("-inf"))
        if after is not None:
            times = [t for t in times if t > after]
        return min(times) if times else None

    def drain(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def snapshot(self, now: float, wall: float) -> dict[str, Any]:
        """For the state file: times as wall-clock epochs."""

        def epoch(t: float | None) -> float | None:
            return None if t is None else round(wall + (t - now), 3)

        probe = None
        if self.last_probe is not None:
            probe = {
                "outcome": self.last_probe.outcome,
                "latency_ms": round(self.last_probe.latency_s * 1000, 1),
                "detail": self.last_probe.detail,
                "at": epoch(self.last_probe_at),
            }
        return {
            "state": str(self.state),
            "reason": self.reason,
            "since": epoch(self.since),
            "probe": probe,
            "restarts": self.restarts_in_window(now),
            "restarts_total": self.restarts_total,
            "restart_times": [epoch(t) for t in self.restarts],
            "n_restarts_seen": self._n_restarts_seen,
            "attempt": self.attempt,
            "backoff_until": epoch(self.backoff_until),
            "fatal_reason": self.reason if self.state is State.FATAL else None,
            "unit": f"{self.unit.active_state}/{self.unit.sub_state}" if self.unit else None,
            "main_pid": self.unit.main_pid if self.unit else 0,
        }
