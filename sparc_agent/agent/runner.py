"""`sparc-agent run`: the long-running agent that keeps applied stacks healthy.

One process, one event loop, one D-Bus connection to the user manager:

- at start it applies the profiles it was given (or those in ~/.config/sparc-agent/profiles), each in a
  `sparc-agent apply` child process: rendering needs pydantic and jinja2 (~17 MB), which the
  long-running process never imports. The supervision plan of a generation (timing, restart policy,
  dependencies) is computed the same way, once per generation, and cached in the stack's state dir;
- it supervises every stack with a `current` generation under $XDG_STATE_HOME/sparc-agent/, adopting
  what runs (no restarts), with one ServiceMachine per service (sparc_agent/supervisor.py) fed by
  PropertiesChanged signals (UserManager.watch), probes, and a periodic reconcile;
- a new generation written by `sparc-agent apply` is noticed by a readlink of each stack's `current`
  every RECONCILE_S (cheap, portable, and it also finds new stacks; inotify would save ~1 syscall/s);
  while an apply holds the stack's lock (seen in /proc/locks, never by taking it) the agent neither
  probes nor restarts that stack: apply is in charge then;
- sd_notify READY=1 after adoption, WATCHDOG=1 at half of WatchdogSec, STATUS="5/5 healthy";
- SIGTERM/SIGINT stop the agent only (units are not its children); SIGHUP re-applies and re-reads;
- when the bus connection drops (user manager restarted) it reconnects with a capped backoff and
  re-reads every unit; machines and their restart budgets carry over.

The state each stack's machines are in is written atomically to STATE_DIR/STACK/agent-state.json,
which `sparc-agent status` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from sparc_agent.agent.metrics import MetricsEndpoint
from sparc_agent.agent.notify import Notifier
from sparc_agent.agent.supervisor import (
    Act,
    Action,
    Event,
    ProbeView,
    ServiceMachine,
    ServicePlan,
    StackPlan,
    State,
    UnitView,
)
from sparc_agent.errors import ManagerDisconnected, NoUserManager, SparcError
from sparc_agent.host.payload import Payload
from sparc_agent.host.process import spawn
from sparc_agent.host.systemd import UnitState, UserManager
from sparc_agent.profile.names import Names
from sparc_agent.state.files import write_atomic
from sparc_agent.state.meta import read_meta
from sparc_agent.state.paths import PRIVATE_FILE_MODE, Paths, StackPaths
from sparc_agent.versions import SYSTEMD_RESTART_STEPS

START_EXTEND_S: Final = 30.0  # while applying at start, ask for 3x this more start-up time, this often
RECONCILE_S: Final = 2.0  # readlink of every stack's `current`, apply-lock check
RESYNC_S: Final = 60.0  # re-read every unit over D-Bus, in case a signal was missed
RECONNECT_MAX_S: Final = 5.0
STATE_WRITE_MIN_S: Final = 0.2  # coalesce state-file writes
HEARTBEAT_S: Final = 10.0  # rewrite the state file this often even without changes (fresh `updated`)
# a restart's kill waits for systemd to begin the stop (its job runs at idle priority), this often, this long
STOP_BEGIN_POLL_S: Final = 0.02
STOP_BEGIN_MAX_S: Final = 5.0

# the user bus (dbus-broker.service is an alias of it where it is the bus)
BUS_UNIT: Final = "dbus.service"
DISCONNECTED: Final = (
    "disconnected: the connection to the user bus dropped (the D-Bus daemon or the user manager went away;"
    " which one is told on reconnect)"
)
MANAGER_RESTARTED: Final = (
    "the user manager was restarted (its units stopped with it): starting the services that ran"
)
BUS_RESTARTED: Final = "the D-Bus daemon was restarted; the user manager and its units kept running"
CONNECTION_DROPPED: Final = "the bus connection dropped; the D-Bus daemon and the user manager kept running"


def _which_went(before: tuple[int, str], now: tuple[int, str]) -> str:
    """What a reconnect found: (manager instance, bus daemon invocation) before and now."""
    if before[0] != now[0]:
        return MANAGER_RESTARTED
    return BUS_RESTARTED if before[1] != now[1] else CONNECTION_DROPPED


# an observer of the machines: (stack, event); see supervisor.Event for the events and their fields
Listener = Callable[[str, Event], None]

# what each state counts as on the STATUS= line
_OK_STATES: Final = (State.HEALTHY, State.COMPLETED)
# a probe that runs apart checks a service its own probe finds up (or one it already found failing)
_APART_STATES: Final = (State.HEALTHY, State.UNHEALTHY)


def mono() -> float:
    return time.monotonic()


def _level(event: Event) -> str:
    """The journal priority of a machine's event."""
    if event["event"] == "state" and event.get("state") == "FATAL":
        return "error"
    if event.get("state") in ("FATAL", "UNHEALTHY") or event["event"] == "restart":
        return "warning"
    return "info"


# ---------------------------------------------------------------- plans (computed in a child process)


def stacks_dir(paths: Paths) -> Path:
    return paths.state_dir


def current_target(root: Path) -> str | None:
    return StackPaths(root).current_target()


async def load_plan(root: Path) -> StackPlan | None:
    """The plan of the stack's current generation, as apply recorded it in meta.json (no model needed)."""
    stack = StackPaths(root)
    number = stack.current_number()
    if number is None:
        return None
    plan = read_meta(stack.current).plan
    return StackPlan(root.name, number, plan.services, plan.sources_json(), dict(plan.published))


# ---------------------------------------------------------------- apply lock (read, never taken)


def apply_running(root: Path) -> bool:
    """True while a `sparc-agent apply` holds the stack's lock (flock), read from /proc/locks."""
    try:
        st = os.stat(StackPaths(root).lock)
        locks = Path("/proc/locks").read_text()
    except OSError:
        return False
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(line.split()[5:6] == [dev] for line in locks.splitlines() if " FLOCK " in line)


# ---------------------------------------------------------------- one stack


def apart_view(result: Any, kind: str, owner: str) -> ProbeView:
    """A verdict of a probe that runs apart, as the supervisor takes it: the phase, the hint in the
    detail, and the service it points at when that is not the owner (then the owner is not restarted)."""
    return ProbeView(
        result.outcome.value,
        result.latency_s,
        f"{result.detail} ({result.hint})" if result.hint else result.detail,
        phase=result.phase,
        source=kind,
        cause=result.cause if result.cause != owner else "",
        first_frame_s=result.timings.get("first_frame") if result.ok else None,
    )


def _view(state: UnitState) -> UnitView:
    return UnitView(
        state.active_state,
        state.sub_state,
        state.result,
        state.n_restarts,
        state.main_pid,
        state.invocation_id,
        state.job,
    )


@dataclass
class StackRunner:
    """The machines of one stack, and the tasks that drive them over one connection."""

    root: Path
    plan: StackPlan
    agent: Agent
    machines: dict[str, ServiceMachine] = field(default_factory=dict)
    pokes: dict[str, asyncio.Event] = field(default_factory=dict)
    adopted: bool = False
    paused: bool = False  # an apply is running

    @property
    def stack(self) -> str:
        return self.plan.stack

    def carry_over(self, old: StackRunner | None, systemd_grows_delay: bool) -> None:
        """Machines for this plan: kept from `old` where the service's plan is unchanged."""
        now = mono()
        previous = self._previous_budgets(now) if old is None else {}
        for svc in self.plan.services:
            kept = old.machines.get(svc.name) if old is not None else None
            if kept is not None and kept.plan == svc:
                if old is not None and old.plan.generation != self.plan.generation:
                    kept.on_new_generation(now)  # FATAL lasts until the next apply
                self.machines[svc.name] = kept
            else:
                m = ServiceMachine(svc, now, systemd_grows_delay=systemd_grows_delay)
                m.adopt(*previous.get(svc.name, ((), 0)))
                self.machines[svc.name] = m
            self.pokes[svc.name] = asyncio.Event()
        self.adopted = old is not None and old.adopted

    def _previous_budgets(self, now: float) -> dict[str, tuple[list[float], int | None]]:
        """What an earlier agent recorded for this generation, per service: restart times and systemd's
        restarts among them (NRestarts seen). A restarted agent keeps the budget and counts only the rest."""
        try:
            data = json.loads(StackPaths(self.root).agent_state.read_text())
        except (OSError, ValueError):
            return {}
        if data.get("generation") != self.plan.generation:
            return {}
        wall = time.time()
        out: dict[str, tuple[list[float], int | None]] = {}
        for name, svc in data.get("services", {}).items():
            times = [now - (wall - t) for t in svc.get("restart_times", []) if isinstance(t, int | float)]
            seen = svc.get("n_restarts_seen")  # absent in the files of agents before it was recorded
            out[name] = (times, seen if isinstance(seen, int) else None)
        return out

    async def run(self, mgr: UserManager) -> None:
        units = [s.unit for s in self.plan.services]
        by_unit = {s.unit: s.name for s in self.plan.services}
        async with mgr.watch(units, initial=False) as changes:
            # the snapshot after subscribing: nothing can change unseen between the two
            states = await asyncio.gather(*(mgr.unit_state(u) for u in units))
            now = mono()
            for st in states:
                m = self.machines[by_unit[st.name]]
                if self.adopted:
                    m.on_unit(_view(st), now)
                else:
                    m.adopt_running(_view(st), now)
                self.flush(m)
            self.adopted = True
            self.agent.adoption_done(self)
            async with asyncio.TaskGroup() as tg:
                for name in self.machines:
                    tg.create_task(self._service_loop(mgr, name))
                    for probe in self.machines[name].plan.apart:
                        tg.create_task(self._apart_loop(name, probe))
                tg.create_task(self._resync(mgr))
                async for st in changes:
                    changed = by_unit.get(st.name)
                    if changed is None:
                        continue
                    m = self.machines[changed]
                    m.on_unit(_view(st), mono())
                    self.flush(m)
                    self.pokes[changed].set()
        raise ManagerDisconnected("watch ended")

    async def _resync(self, mgr: UserManager) -> None:
        """The periodic reconcile with systemd: a missed signal cannot leave a machine wrong for long."""
        while True:
            await asyncio.sleep(RESYNC_S)
            for name, m in self.machines.items():
                view = _view(await mgr.unit_state(m.plan.unit))
                if view != m.unit:
                    m.on_unit(view, mono())
                    self.flush(m)
                    self.pokes[name].set()

    async def _service_loop(self, mgr: UserManager, name: str) -> None:
        from sparc_agent.apply.fastpath import spec_from_plan

        m = self.machines[name]
        poke = self.pokes[name]
        spec = spec_from_plan(m.plan.probe) if m.plan.probe else None
        while True:
            poke.clear()
            if self.paused:
                await asyncio.sleep(RECONCILE_S / 2)
                continue
            now = mono()
            action = m.due(now)
            self.flush(m)
            if action is not None:
                await self._act(mgr, m, action)
            elif spec is not None and m.probe_due(now):
                await self._probe(m, spec)
            else:  # (not at `now` again: a time that passed with nothing to do waits for an input)
                await self._sleep_until(m.next_wakeup(after=now), poke)

    async def _probe(self, m: ServiceMachine, spec: Any) -> None:
        invocation = m.unit.invocation_id if m.unit is not None else ""
        pod = m.plan.probe.get("pod") if m.plan.probe else None  # set: its port is not published
        result = await self.agent.probers.run(spec, container=m.plan.container, pod=pod)
        # a result about a process that is gone (restarted meanwhile) says nothing
        if m.unit is not None and m.unit.invocation_id == invocation and not self.paused:
            self.feed_probe(m.plan.name, ProbeView(result.outcome.value, result.latency_s, result.detail))

    async def _apart_loop(self, name: str, plan: dict[str, Any]) -> None:
        """A probe that runs apart (webrtc): on its own interval, only while the service's own probe
        says it is up (a starting renderer is not a broken one), each verdict fed in with its phase."""
        from sparc_agent.apply.fastpath import spec_from_plan
        from sparc_agent.probes import run_probe

        m = self.machines[name]
        spec = spec_from_plan(plan)
        while True:
            await asyncio.sleep(spec.interval if m.state in _APART_STATES else RECONCILE_S / 2)
            if self.paused or m.state not in _APART_STATES or m.unit is None:
                continue
            invocation = m.unit.invocation_id
            result = await run_probe(spec, container=m.plan.container, secrets=self.plan.secret_sources)
            if m.unit is not None and m.unit.invocation_id == invocation and not self.paused:
                self.feed_probe(name, apart_view(result, plan["kind"], name))

    def feed_probe(self, service: str, result: ProbeView) -> None:
        """A probe result for `service`: from its own health probe, or from a probe run apart (webrtc)."""
        m = self.machines[service]
        m.on_probe(result, mono())
        self.flush(m)
        self._poke(service)

    @staticmethod
    async def _sleep_until(wake: float | None, poke: asyncio.Event) -> None:
        timeout = None if wake is None else max(0.0, wake - mono())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await poke.wait()

    async def _act(self, mgr: UserManager, m: ServiceMachine, action: Action) -> None:
        """Carry out `action` in a task of its own: a session that ends meanwhile (a new generation of
        another stack, a reload) does not cut it short, and its outcome always reaches the machine."""
        self.agent.log.info(
            "decision",
            stack=self.stack,
            service=m.plan.name,
            act=str(action.act),
            reason=action.reason,
            attempt=action.attempt,
            restarts=m.restarts_in_window(mono()),
        )
        task = asyncio.create_task(self._carry_out(mgr, m, action))
        self.agent.actions.add(task)
        task.add_done_callback(self.agent.actions.discard)
        await asyncio.shield(task)

    async def _carry_out(self, mgr: UserManager, m: ServiceMachine, action: Action) -> None:
        ok, detail, cancelled = True, "", True
        try:
            await self._io(mgr, m, action)
            cancelled = False
        except ManagerDisconnected:
            pass  # cancelled: the next snapshot of the unit tells what happened
        except SparcError as exc:
            ok, detail, cancelled = False, await self._why_failed(exc), False
        except Exception as exc:  # our bug: reported as a failed action, never a machine left busy
            ok, detail, cancelled = False, f"{type(exc).__name__}: {exc}", False
        finally:  # also when the agent stops (CancelledError): no path leaves the action in flight
            if cancelled:
                m.on_action_cancelled(action, mono())
            else:
                m.on_action_done(action, ok, mono(), detail)
            self.flush(m)
            self._poke(m.plan.name)

    async def _why_failed(self, exc: SparcError) -> str:
        """A start that failed on a dependency: why the pod did not start, as apply says it."""
        from sparc_agent.apply import portclash

        pod_unit = Names(self.stack).pod_unit
        pod = await asyncio.to_thread(portclash.blamed_on_the_pod, exc, pod_unit, self.plan.published)
        return pod or str(exc)

    async def _io(self, mgr: UserManager, m: ServiceMachine, action: Action) -> None:
        svc = m.plan
        if action.act is Act.RESTART:
            await self._restart(mgr, m, action.kill_after)
        elif action.act is Act.START:
            await mgr.start(svc.unit)
        else:  # HOLD, STOP
            await mgr.stop(svc.unit)

    async def _restart(self, mgr: UserManager, m: ServiceMachine, kill_after: float) -> None:
        """RestartUnit; if the stop takes longer than `kill_after` (a frozen process never acts on the
        SIGTERM of podman's stop, which then waits its 10 s stop timeout), SIGKILL the container's own
        processes, taken before the stop: never podman's stop command, which then completes at once."""
        svc = m.plan
        with Payload(await self._main_pid(mgr, svc.unit)) as payload:
            job = asyncio.ensure_future(mgr.restart(svc.unit))
            await asyncio.wait({job}, timeout=kill_after)
            if not job.done() and await self._stopping(mgr, svc.unit, job):
                await self._kill(mgr, svc, payload, f"stop not done after {kill_after:g}s")
            await job

    @staticmethod
    async def _main_pid(mgr: UserManager, unit: str) -> int:
        """The unit's main process now (0: none, or unknown): read fresh, a kill must not go astray."""
        try:
            state = await mgr.unit_state(unit)
        except SparcError:
            return 0
        return state.main_pid if state.active_state == "active" else 0

    @staticmethod
    async def _stopping(mgr: UserManager, unit: str, job: asyncio.Future[str]) -> bool:
        """Is the restart's stop under way? Not begun yet: wait for it (systemd runs a queued job after
        answering; a kill before would be a crash, restarted by systemd and counted twice). Over: the
        start runs, and a slow start is no hang."""
        deadline = mono() + STOP_BEGIN_MAX_S
        while not job.done():
            try:
                state = (await mgr.unit_state(unit)).active_state
            except SparcError:
                return False  # cannot tell: the job's own outcome decides
            if state != "active" or mono() >= deadline:
                return state == "deactivating"
            await asyncio.wait({job}, timeout=STOP_BEGIN_POLL_S)
        return False

    async def _kill(self, mgr: UserManager, svc: ServicePlan, payload: Payload, reason: str) -> None:
        killed = payload.kill() if payload else 0
        if payload and not payload.denied:
            whom = f"{killed} container processes"
        else:  # none known, or not ours to signal: all the unit's processes, podman's stop command included
            whom = "all the unit's processes"
            with contextlib.suppress(SparcError):
                await mgr.kill(svc.unit, signal.SIGKILL, "all")
        self.agent.log.warning(
            "kill", stack=self.stack, service=svc.name, reason=reason, signal="SIGKILL", whom=whom
        )

    def flush(self, m: ServiceMachine) -> None:
        """The machine's events to the journal and the listeners; a recovery pokes `healthy` dependents."""
        events = m.drain()
        for event in events:
            self.agent.notify_listeners(self.stack, event)
            if event["event"] == "probe":
                continue  # every probe result: for listeners (metrics), too many for the journal
            fields = {k: v for k, v in event.items() if k != "event"}
            getattr(self.agent.log, _level(event))(event["event"], stack=self.stack, **fields)
        if m.take_recovered():
            for dependent in self.plan.dependents(m.plan.name):
                self.machines[dependent].on_dependency_recovered(m.plan.name)
                self._poke(dependent)
        if events:
            self.agent.dirty(self)

    def _poke(self, service: str) -> None:
        """Wake the service's loop, in the session that runs now (an action may outlive its session)."""
        runner = self.agent.runners.get(self.stack, self)
        event = runner.pokes.get(service)
        if event is not None:
            event.set()

    def resume(self) -> None:
        """An apply just finished: what it did is not a failure of ours to count."""
        now = mono()
        for name, m in self.machines.items():
            m.on_apply_finished(now)
            self.flush(m)
            self.pokes[name].set()

    def state_document(self) -> dict[str, Any]:
        now, wall = mono(), time.time()
        return {
            "stack": self.stack,
            "generation": self.plan.generation,
            "pid": os.getpid(),
            "updated": round(wall, 3),
            "connected": self.agent.connected,
            "services": {name: m.snapshot(now, wall) for name, m in self.machines.items()},
        }

    def summary(self) -> tuple[int, int, list[str]]:
        ok = sum(1 for m in self.machines.values() if m.state in _OK_STATES)
        bad = [f"{n} {m.state}" for n, m in self.machines.items() if m.state not in _OK_STATES]
        return ok, len(self.machines), bad


# ---------------------------------------------------------------- the agent


@dataclass
class AgentOptions:
    profiles: Sequence[str] = ()  # apply these at start (default: every profile in the profiles dir)
    config_dir: Path | None = None  # instead of ~/.config/sparc-agent/profiles
    apply: bool = True
    log_format: str | None = None


class _Restart(Exception):
    """End the current session (new generation, new stack, SIGHUP) and build the next one."""


class Agent:
    def __init__(self, options: AgentOptions, paths: Paths | None = None) -> None:
        from sparc_agent.agent.journal import setup
        from sparc_agent.probes.inpod import PodProbers

        self.options = options
        self.probers = PodProbers()  # one prober per pod whose probes run inside it, kept
        self.paths = paths or Paths.from_env()
        self.log = setup(options.log_format)
        self.notifier = Notifier()
        self.runners: dict[str, StackRunner] = {}
        self.connected = False
        self.ready_sent = False
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._pending_adoption: set[str] = set()
        self._grows_delay = False
        # the user manager and the bus daemon we last talked to: (UserManager.instance, dbus InvocationID)
        self._instance: tuple[int, str] | None = None
        # called with (stack, event) for every event of every machine (agent.metrics registers here)
        self.listeners: list[Listener] = []
        self.actions: set[asyncio.Task[None]] = set()  # actions in flight (each outlives its session)
        self.metrics = MetricsEndpoint(self)

    # ------------------------------------------------------------ entry

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        self.log.info("start", pid=os.getpid(), state_dir=str(stacks_dir(self.paths)))
        await self.metrics.start()  # off unless agent.yaml configures it
        tasks = [asyncio.create_task(self._watchdog()), asyncio.create_task(self._writer())]
        try:
            if self.options.apply:
                await self._apply_profiles()
            await self._sessions()
        finally:
            for t in tasks:
                t.cancel()
            self.metrics.close()
            await self.probers.aclose()
            self.connected = False
            for runner in self.runners.values():
                self._write_state(runner)
            self.notifier.stopping()
            self.log.info("stop", reason="signal: the stack keeps running")
        return 0

    def _profile_paths(self) -> list[Path]:
        if self.options.profiles:
            return [Path(p) for p in self.options.profiles]
        directory = self.options.config_dir or self.paths.profiles_dir
        if not directory.is_dir():
            return []
        return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())

    async def _apply_profiles(self) -> None:
        """`sparc-agent apply` each profile, in a child process (keeps pydantic/jinja2 out of the agent)."""
        for path in self._profile_paths():
            t0 = mono()
            proc = await spawn(
                [sys.executable, "-m", "sparc_agent.cli.main", "apply", str(path)], stderr="stdout"
            )
            # a first apply may pull a 20 GB image: keep systemd's start timeout from killing it
            heartbeat = asyncio.create_task(self._extend_start_while(f"applying {path.name}"))
            try:
                out, _ = await proc.communicate()
            finally:
                heartbeat.cancel()
            text = out.decode(errors="replace").strip()
            level = "info" if proc.returncode == 0 else "error"
            getattr(self.log, level)(
                "apply",
                profile=str(path),
                rc=proc.returncode,
                seconds=round(mono() - t0, 2),
                reason=text.splitlines()[-1] if text else "",
            )

    async def _extend_start_while(self, status: str) -> None:
        """Until cancelled, and only before READY: EXTEND_TIMEOUT_USEC every START_EXTEND_S."""
        while not self.ready_sent:
            self.notifier.extend_start(START_EXTEND_S * 3, status)
            await asyncio.sleep(START_EXTEND_S)

    async def _discover(self) -> None:
        """Runners for every stack with a current generation; machines carry over where plans match."""
        root = stacks_dir(self.paths)
        found = sorted(p.parent for p in root.glob("*/current")) if root.is_dir() else []
        runners: dict[str, StackRunner] = {}
        for stack_root in found:
            try:
                plan = await load_plan(stack_root)
            except (SparcError, OSError, ValueError) as exc:
                self.log.error("plan", stack=stack_root.name, reason=str(exc))
                continue
            if plan is None:
                continue
            old = self.runners.get(plan.stack)
            runner = StackRunner(stack_root, plan, self)
            runner.carry_over(old, self._grows_delay)
            runners[plan.stack] = runner
            if old is None or old.plan.generation != plan.generation:
                self.log.info("generation", stack=plan.stack, generation=plan.generation)
        for gone in sorted(set(self.runners) - set(runners)):  # `down --purge` removed its state
            self.log.info(
                "forgotten", stack=gone, reason="no current generation (down --purge): no longer supervised"
            )
            self.notify_listeners(gone, {"event": "forgotten", "stack": gone})
        self.runners = runners

    async def _sessions(self) -> None:
        """Connect, supervise until the connection drops, reconnect with a capped backoff; until stopped."""
        delay = 0.2
        while not self._stop.is_set():
            try:
                mgr = await UserManager.connect()
            except NoUserManager as exc:
                self.connected = False
                self.log.warning("bus", reason=str(exc), retry_s=delay)
                if not self.ready_sent:  # systemd would otherwise time out our start and loop on it
                    self.ready_sent = True
                    self.notifier.ready("waiting for the systemd user manager")
                if await self._wait_stop(delay):
                    return
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            delay = 0.2
            self.connected = True
            self.log.info("bus", reason="connected", address=mgr.address)
            try:
                async with mgr:
                    await self._connected(mgr)
            except (ManagerDisconnected, NoUserManager):
                # which one went (the bus daemon, or the manager with it) is told on reconnect
                self.log.warning("bus", reason=DISCONNECTED, address=mgr.address)
            self.connected = False
            for runner in self.runners.values():
                self.dirty(runner)

    async def _connected(self, mgr: UserManager) -> None:
        """Sessions on one connection: each ends with a reload, a new generation or stack, or the end."""
        with contextlib.suppress(SparcError):
            self._grows_delay = (await mgr.release()).major >= SYSTEMD_RESTART_STEPS
        restarted = await self._new_instance(mgr)
        while not self._stop.is_set() and mgr.connected:
            if self._reload.is_set():
                self._reload.clear()
                self.notifier.reloading()
                self.log.info("reload", reason="SIGHUP")
                await self.metrics.reload()
                if self.options.apply:
                    await self._apply_profiles()
                self.runners = {}  # re-read everything
            await self._discover()
            if restarted:  # after _discover: the machines it carried over are the ones owed
                restarted = False
                now = mono()
                for runner in self.runners.values():
                    for m in runner.machines.values():
                        m.on_manager_restart(now)
            await self._session(mgr)

    async def _new_instance(self, mgr: UserManager) -> bool:
        """Is `mgr` another manager than the one before the disconnect (not just the same one on a new bus)?
        Says which one went away: the user manager, the D-Bus daemon only, or neither (a dropped connection).

        A restarted manager stopped every unit, usually without a word to us (the bus daemon is one of its
        units and goes first), and starts none of them: the machines must not take that for "stopped by
        someone" (STOPPED, never restarted), or the stack would stay down."""
        try:
            manager = await mgr.instance()
        except ManagerDisconnected:
            raise
        except SparcError:
            return False
        try:
            bus = (await mgr.unit_state(BUS_UNIT)).invocation_id
        except ManagerDisconnected:
            raise
        except SparcError:
            bus = ""  # a bus that is not one of the manager's units: only the manager is told apart
        instance = (manager, bus)
        previous, self._instance = self._instance, instance
        if previous is None:
            return False
        went = _which_went(previous, instance)
        self.log.warning("bus", reason=went)
        return went == MANAGER_RESTARTED

    async def _wait_stop(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        return self._stop.is_set()

    async def _session(self, mgr: UserManager) -> None:
        """Run every stack's runner on `mgr` until a stop, a reload, a change of stacks, or a disconnect."""
        self._pending_adoption = {r.stack for r in self.runners.values() if not r.adopted}
        if not self._pending_adoption:
            self._send_ready()
        try:
            async with asyncio.TaskGroup() as tg:
                for runner in self.runners.values():
                    tg.create_task(self._run_stack(runner, mgr))
                tg.create_task(self._reconcile())
                tg.create_task(self._until(mgr))
        except* _Restart:
            pass  # the caller builds the next session
        except* ManagerDisconnected as group:
            raise group.exceptions[0] from None

    async def _run_stack(self, runner: StackRunner, mgr: UserManager) -> None:
        try:
            await runner.run(mgr)
        except ManagerDisconnected:
            raise
        except SparcError as exc:  # a call systemd refused: start this session over, not too eagerly
            self.log.error("stack", stack=runner.stack, reason=str(exc))
            await asyncio.sleep(1.0)
            raise _Restart from exc

    async def _until(self, mgr: UserManager) -> None:
        stop, reload = asyncio.ensure_future(self._stop.wait()), asyncio.ensure_future(self._reload.wait())
        gone = asyncio.ensure_future(mgr.wait_disconnected())
        try:
            await asyncio.wait({stop, reload, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (stop, reload, gone):
                f.cancel()
        if gone.done() and not gone.cancelled():
            raise ManagerDisconnected("the bus connection dropped")
        raise _Restart

    async def _reconcile(self) -> None:
        """Every RECONCILE_S: new generations or stacks end the session; apply locks pause a stack."""
        root = stacks_dir(self.paths)
        known = {p.parent: current_target(p.parent) for p in root.glob("*/current")} if root.is_dir() else {}
        while True:
            await asyncio.sleep(RECONCILE_S)
            found = {p.parent for p in root.glob("*/current")} if root.is_dir() else set()
            for runner in self.runners.values():
                busy = apply_running(runner.root)
                if busy != runner.paused:
                    runner.paused = busy
                    self.log.info(
                        "apply", stack=runner.stack, reason="apply running: paused" if busy else "resumed"
                    )
                    if not busy:
                        runner.resume()
            changed = [p for p in found if p not in known or current_target(p) != known[p]]
            changed += [p for p in known if p not in found]  # `down --purge` removed it
            if changed and not any(apply_running(p) for p in changed):
                raise _Restart

    def adoption_done(self, runner: StackRunner) -> None:
        self._pending_adoption.discard(runner.stack)
        self.dirty(runner)
        if not self._pending_adoption:
            self._send_ready()

    def _send_ready(self) -> None:
        status = self.status_line()
        if not self.ready_sent:
            self.ready_sent = True
            self.notifier.ready(status)
            self.log.info("ready", reason=status, stacks=sorted(self.runners))
        else:
            self.notifier.status(status)

    def status_line(self) -> str:
        if not self.runners:
            return "no stacks applied"
        ok = total = 0
        bad: list[str] = []
        for runner in self.runners.values():
            o, t, b = runner.summary()
            ok, total = ok + o, total + t
            bad += [f"{runner.stack}/{x}" if len(self.runners) > 1 else x for x in b]
        line = f"{ok}/{total} healthy"
        if bad:
            line += " (" + ", ".join(bad[:4]) + (", ..." if len(bad) > 4 else "") + ")"
        return line if self.connected else line + "; user manager unreachable"

    def notify_listeners(self, stack: str, event: Event) -> None:
        for listener in self.listeners:
            try:
                listener(stack, event)
            except Exception as exc:  # a listener's bug must not stop supervision
                self.log.error("listener", reason=f"{type(exc).__name__}: {exc}", listener=repr(listener))

    # ------------------------------------------------------------ state file, watchdog

    def dirty(self, runner: StackRunner) -> None:
        self._dirty.add(runner.stack)
        self._dirty_event.set()

    def _write_state(self, runner: StackRunner) -> None:
        if not runner.root.is_dir():
            return  # purged (`down --purge`): do not bring its directory back
        try:
            state = json.dumps(runner.state_document(), indent=1).encode()
            write_atomic(StackPaths(runner.root).agent_state, state, mode=PRIVATE_FILE_MODE)
        except OSError as exc:
            self.log.error("state_file", stack=runner.stack, reason=str(exc))

    async def _writer(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT_S):
                    await self._dirty_event.wait()
            self._dirty_event.clear()
            stacks = set(self.runners) if not self._dirty else self._dirty
            self._dirty = set()
            for stack in stacks:
                runner = self.runners.get(stack)
                if runner is not None:
                    self._write_state(runner)
            if self.ready_sent:
                self.notifier.status(self.status_line())
            await asyncio.sleep(STATE_WRITE_MIN_S)

    async def _watchdog(self) -> None:
        if self.notifier.watchdog_s is None:
            return
        while True:  # from the event loop itself: a stuck loop stops the pings and systemd restarts us
            self.notifier.watchdog()
            await asyncio.sleep(self.notifier.watchdog_s / 2)


def run(options: AgentOptions) -> int:
    async def go() -> int:
        return await Agent(options).main()

    return asyncio.run(go())
