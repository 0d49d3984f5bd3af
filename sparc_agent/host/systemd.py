"""The systemd user manager over D-Bus: one thin, typed asyncio wrapper.

This is the only module that imports the D-Bus library (dbus-fast). It talks to the manager with
plain messages (no introspection round trips), maps bus errors to `sparc_agent.errors`, and waits
for job results through `JobRemoved` signals, listening before a job is dispatched.

Usage::

    async with await UserManager.connect() as mgr:
        await mgr.reload()
        await mgr.start("sparc-avatar.target")
        async with mgr.watch(["web.service"]) as changes:
            async for state in changes:
                ...
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, TypedDict, Unpack

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from sparc_agent.errors import (
    AccessDenied,
    JobFailed,
    JobWaitTimeout,
    ManagerDisconnected,
    NoUserManager,
    SystemdError,
    UnitLoadError,
    UnitNotFound,
)
from sparc_agent.versions import Version

__all__ = [
    "MAX_IN_FLIGHT",
    "UnitListEntry",
    "UnitState",
    "UnitWatch",
    "UserManager",
    "default_address",
]

SYSTEMD: Final = "org.freedesktop.systemd1"
MANAGER_PATH: Final = "/org/freedesktop/systemd1"
MANAGER_IFACE: Final = "org.freedesktop.systemd1.Manager"
UNIT_IFACE: Final = "org.freedesktop.systemd1.Unit"
SERVICE_IFACE: Final = "org.freedesktop.systemd1.Service"
PROPS_IFACE: Final = "org.freedesktop.DBus.Properties"
DBUS: Final = "org.freedesktop.DBus"
DBUS_PATH: Final = "/org/freedesktop/DBus"

# At most this many method calls in flight per connection: hundreds of pending calls are reported to
# make dbus-fast drop the connection, and bursts are no faster uncapped (300 restarts: 2.0 s capped,
# 2.8-3.1 s not). Waiting for a job result is not a call and is not counted: a slow start must not
# block state queries.
MAX_IN_FLIGHT: Final = 32
# libdbus's default reply timeout: systemd answers in milliseconds unless it is stuck.
CALL_TIMEOUT: Final = 25.0
# how long a watch waits for the Unit half of a Service+Unit signal pair (they are sent back to back)
_PAIR_GRACE: Final = 0.05

_JOB_REMOVED_RULE: Final = (
    f"type='signal',sender='{SYSTEMD}',path='{MANAGER_PATH}',interface='{MANAGER_IFACE}',member='JobRemoved'"
)
_OWNER_RULE: Final = (
    f"type='signal',sender='{DBUS}',path='{DBUS_PATH}',interface='{DBUS}',"
    f"member='NameOwnerChanged',arg0='{SYSTEMD}'"
)

# what to tell the user for each job result other than "done"
_JOB_HINTS: Final[dict[str, str]] = {
    "failed": "see `systemctl --user status {unit}` and `journalctl --user-unit {unit}`",
    "timeout": "systemd's own job timeout (TimeoutStartSec=/TimeoutStopSec=) expired",
    "dependency": "a unit it requires failed",
    "canceled": "the job was canceled or replaced by another job",
    "skipped": "the job did not apply to the unit's state",
    "invalid": "the job type is not applicable to this unit",
    "assert": "an Assert*= check of the unit failed",
    "unsupported": "the unit type is not supported on this system",
    "collected": "the unit was garbage-collected before the job ran",
    "once": "the unit may only be started once",
}


def default_address() -> str:
    """The user bus address: $DBUS_SESSION_BUS_ADDRESS, else $XDG_RUNTIME_DIR/bus (what sd-bus does)."""
    addr = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if addr:
        return addr
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return f"unix:path={runtime}/bus"


# ---------------------------------------------------------------- value types


class JobOptions(TypedDict, total=False):
    """How start/stop/restart/try_restart queue a job and wait for it."""

    mode: str  # systemd's job mode: "replace" (the default), "fail", ...
    raise_on_failure: bool  # a result other than "done" raises JobFailed (default True)
    timeout: float | None  # seconds to wait for the result (default None: systemd's own timeouts)


@dataclass(frozen=True, slots=True)
class UnitState:
    """A snapshot of one unit, from org.freedesktop.systemd1.Unit (+ .Service for services)."""

    name: str
    load_state: str  # loaded, not-found, bad-setting, error, masked
    active_state: str  # active, reloading, inactive, failed, activating, deactivating
    sub_state: str  # type-specific: running, dead, exited, auto-restart, ...
    result: str  # Service.Result: success, exit-code, signal, timeout, ...; "" for non-services
    main_pid: int  # 0 when not running
    n_restarts: int  # automatic restarts (Restart=) since the last manual start
    active_enter_timestamp: int  # µs since the epoch, 0 if never active
    invocation_id: str  # hex, "" if never started
    fragment_path: str
    source_path: str  # e.g. the .container file a quadlet unit was generated from
    load_error: str = ""  # LoadError's message, when load_state is not "loaded"
    exec_main_status: int = 0  # exit status (or signal number) of the last main process
    exec_main_start_timestamp: int = 0  # µs since the epoch the running main process was started, 0 if none
    need_daemon_reload: bool = False  # its unit file (or the quadlet it came from) changed since loading
    job: int = 0  # the id of the job queued for it (a start, a restart), 0 when none

    @property
    def exists(self) -> bool:
        return self.load_state != "not-found"

    @property
    def is_active(self) -> bool:
        return self.active_state == "active"

    @property
    def is_failed(self) -> bool:
        return self.active_state == "failed"


@dataclass(frozen=True, slots=True)
class UnitListEntry:
    """One row of ListUnitsByPatterns."""

    name: str
    description: str
    load_state: str
    active_state: str
    sub_state: str
    following: str
    path: str
    job_id: int
    job_type: str
    job_path: str


# the properties UnitState is made of; others may go stale in a watch without harm
_STATE_PROPS: Final = frozenset(
    {
        "Id",
        "LoadState",
        "ActiveState",
        "SubState",
        "Result",
        "MainPID",
        "NRestarts",
        "ActiveEnterTimestamp",
        "InvocationID",
        "FragmentPath",
        "SourcePath",
        "LoadError",
        "ExecMainStatus",
        "ExecMainStartTimestamp",
        "NeedDaemonReload",
        "Job",
    }
)


def _state_from(unit: str, u: dict[str, Any], s: dict[str, Any]) -> UnitState:
    load_error = u.get("LoadError") or ("", "")
    inv = u.get("InvocationID") or b""
    job = u.get("Job") or (0, "/")
    return UnitState(
        name=str(u.get("Id") or unit),
        load_state=str(u.get("LoadState", "")),
        active_state=str(u.get("ActiveState", "")),
        sub_state=str(u.get("SubState", "")),
        result=str(s.get("Result", "")),
        main_pid=int(s.get("MainPID", 0)),
        n_restarts=int(s.get("NRestarts", 0)),
        active_enter_timestamp=int(u.get("ActiveEnterTimestamp", 0)),
        invocation_id=bytes(inv).hex(),
        fragment_path=str(u.get("FragmentPath", "")),
        source_path=str(u.get("SourcePath", "")),
        load_error=str(load_error[1]),
        exec_main_status=int(s.get("ExecMainStatus", 0)),
        exec_main_start_timestamp=int(s.get("ExecMainStartTimestamp", 0)),
        need_daemon_reload=bool(u.get("NeedDaemonReload", False)),
        job=int(job[0]),
    )


def _is_service(unit: str) -> bool:
    return unit.endswith(".service")


def _unwrap(props: dict[str, Any]) -> dict[str, Any]:
    return {k: v.value for k, v in props.items()}


# ---------------------------------------------------------------- errors


def _map_error(name: str, text: str, what: str, unit: str | None, address: str) -> SystemdError:
    """A D-Bus error reply as the project's exception, naming the unit when there is one."""
    if name == "org.freedesktop.systemd1.NoSuchUnit":
        return UnitNotFound(unit or "?", text)
    if name in (
        "org.freedesktop.systemd1.LoadFailed",
        "org.freedesktop.systemd1.BadUnitSetting",
        "org.freedesktop.systemd1.UnitMasked",
    ):
        return UnitLoadError(unit or "?", text)
    if name in (
        "org.freedesktop.DBus.Error.AccessDenied",
        "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
        "org.freedesktop.systemd1.OnlyByDependency",
    ):
        return AccessDenied(f"{what}: permission denied: {text}")
    if name in ("org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"):
        return ManagerDisconnected(
            f"{what}: the systemd user manager is not on the bus at {address} ({text})"
        )
    return SystemdError(f"{what}: {text} [{name}]")


# ---------------------------------------------------------------- job results


class _JobTracker:
    """Pairs JobRemoved signals with the jobs we dispatched.

    A job can finish, and its JobRemoved be read off the socket, before the coroutine that sent
    StartUnit has seen the reply naming the job (seen in ~2 % of sequential starts here). So while
    any dispatch is in flight, results for jobs nobody waits for yet are kept; once no dispatch is in
    flight, leftovers (other clients' jobs, dependency jobs) are dropped, which keeps the buffer
    bounded. Several callers may wait for one job: systemd merges a start into a pending start job
    and returns the same job path to both.
    """

    def __init__(self) -> None:
        self._dispatching = 0
        self._early: dict[str, str] = {}
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}

    def begin(self) -> None:
        self._dispatching += 1

    def end(self, job: str | None) -> asyncio.Future[str] | None:
        """Close one dispatch: `job` is the path from the reply, None if the call failed."""
        self._dispatching -= 1
        fut: asyncio.Future[str] | None = None
        if job is not None:
            fut = asyncio.get_running_loop().create_future()
            early = self._early.get(job)  # not popped: a merged dispatch may still ask for it
            if early is not None:
                fut.set_result(early)
            else:
                self._waiters.setdefault(job, []).append(fut)
        if self._dispatching == 0:
            self._early.clear()
        return fut

    def removed(self, job: str, result: str) -> None:
        futs = self._waiters.pop(job, None)
        if self._dispatching:
            self._early[job] = result
        for fut in futs or ():
            if not fut.done():
                fut.set_result(result)

    def forget(self, job: str, fut: asyncio.Future[str]) -> None:
        futs = self._waiters.get(job)
        if futs is not None and fut in futs:
            futs.remove(fut)
            if not futs:
                del self._waiters[job]

    def fail_all(self, exc: Exception) -> None:
        for futs in self._waiters.values():
            for fut in futs:
                if not fut.done():
                    fut.set_exception(exc)
        self._waiters.clear()
        self._early.clear()

    @property
    def pending(self) -> int:
        return sum(len(f) for f in self._waiters.values())


# ---------------------------------------------------------------- the manager


class UserManager:
    """A connection to one systemd user manager. Create with `await UserManager.connect()`."""

    def __init__(self, bus: MessageBus, address: str, max_in_flight: int, call_timeout: float) -> None:
        self._bus = bus
        self.address = address
        self._sem = asyncio.Semaphore(max_in_flight)
        self._call_timeout = call_timeout
        self._jobs = _JobTracker()
        self._watchers: dict[str, list[UnitWatch]] = {}
        # reply serial -> callback run when the reply is read off the socket (in wire order with signals)
        self._fences: dict[int, Callable[[], None]] = {}
        self._manager_on_bus = asyncio.Event()
        self._closed = False
        #: set once the bus connection is gone (manager exited, bus daemon stopped, or close()).
        self.disconnected = asyncio.Event()
        self._disconnect_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    @classmethod
    async def connect(
        cls,
        address: str | None = None,
        *,
        max_in_flight: int = MAX_IN_FLIGHT,
        call_timeout: float = CALL_TIMEOUT,
        manager_timeout: float = 5.0,
    ) -> UserManager:
        """Connect to the user bus and Subscribe to the manager's signals.

        `manager_timeout`: how long to wait for systemd to join a bus that has just been socket-activated
        (the manager connects to it only after dbus.service has started).
        """
        addr = address or default_address()
        try:
            bus = await MessageBus(bus_address=addr).connect()
        except Exception as e:  # OSError, AuthError, InvalidAddressError, EOFError: all "can't reach"
            raise NoUserManager(addr, f"{type(e).__name__}: {e}") from e
        self = cls(bus, addr, max_in_flight, call_timeout)
        try:
            await self._setup(manager_timeout)
        except BaseException:
            self._closed = True
            bus.disconnect()
            if self._disconnect_task is not None:
                self._disconnect_task.cancel()
            raise
        return self

    async def _setup(self, manager_timeout: float) -> None:
        self._bus.add_message_handler(self._on_message)
        self._disconnect_task = asyncio.create_task(self._watch_disconnect())
        # match rules first: a job we dispatch later must not finish unseen
        await self._add_match(_OWNER_RULE)
        await self._add_match(_JOB_REMOVED_RULE)
        (has_owner,) = await self._call(DBUS_PATH, DBUS, "NameHasOwner", "s", [SYSTEMD], dest=DBUS)
        if has_owner:
            self._manager_on_bus.set()
        try:
            async with asyncio.timeout(manager_timeout):
                await self._manager_on_bus.wait()
        except TimeoutError:
            raise NoUserManager(self.address, f"{SYSTEMD} did not appear on the bus") from None
        # without Subscribe the manager emits neither JobRemoved nor PropertiesChanged
        await self._call(MANAGER_PATH, MANAGER_IFACE, "Subscribe")

    async def _watch_disconnect(self) -> None:
        with contextlib.suppress(Exception):  # an error here only says *why* it disconnected
            await self._bus.wait_for_disconnect()  # type: ignore[no-untyped-call]  # dbus-fast lacks a hint
        why = (
            "closed" if self._closed else f"lost the connection to the systemd user manager at {self.address}"
        )
        exc = ManagerDisconnected(why)
        self._jobs.fail_all(exc)
        for watches in self._watchers.values():
            for w in watches:
                w._close(exc)
        self.disconnected.set()

    async def close(self) -> None:
        """Disconnect; pending job waits and watches end with ManagerDisconnected."""
        self._closed = True
        if self._bus.connected:
            self._bus.disconnect()
        if self._disconnect_task is not None:
            await self._disconnect_task

    async def wait_disconnected(self) -> None:
        await self.disconnected.wait()

    @property
    def connected(self) -> bool:
        return self._bus.connected

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ------------------------------------------------------------ plumbing

    def _on_message(self, msg: Message) -> None:
        """Runs for every message read off the socket, in wire order; never marks one handled."""
        mtype = msg.message_type
        if mtype is MessageType.SIGNAL:
            if msg.member == "JobRemoved" and msg.interface == MANAGER_IFACE and msg.path == MANAGER_PATH:
                _id, job, _unit, result = msg.body
                self._jobs.removed(job, result)
            elif msg.member == "PropertiesChanged" and msg.interface == PROPS_IFACE and msg.path:
                for w in self._watchers.get(msg.path, ()):
                    w._feed(msg.path, msg.body[0], msg.body[1], msg.body[2])
            elif msg.member == "NameOwnerChanged" and msg.sender == DBUS and msg.body[0] == SYSTEMD:
                if msg.body[2]:
                    self._manager_on_bus.set()
                else:
                    self._manager_on_bus.clear()
        elif self._fences:
            fence = self._fences.pop(msg.reply_serial, None)
            if fence is not None:
                fence()

    async def _call(
        self,
        path: str,
        iface: str,
        member: str,
        signature: str = "",
        body: Sequence[Any] = (),
        *,
        unit: str | None = None,
        dest: str = SYSTEMD,
        timeout: float | None = None,
        fence: Callable[[], None] | None = None,
    ) -> list[Any]:
        """One method call, capped by the semaphore, errors mapped; returns the reply body."""
        what = f"{member} {unit}" if unit else member
        if not self._bus.connected:
            raise ManagerDisconnected(f"{what}: not connected to the systemd user manager at {self.address}")
        msg = Message(
            destination=dest, path=path, interface=iface, member=member, signature=signature, body=list(body)
        )
        if fence is not None:
            msg.serial = self._bus.next_serial()
            self._fences[msg.serial] = fence
        t = self._call_timeout if timeout is None else timeout
        async with self._sem:
            try:
                async with asyncio.timeout(t if t > 0 else None):
                    reply = await self._bus.call(msg)
            except TimeoutError:
                raise SystemdError(f"{what}: no reply from systemd within {t:g} s") from None
            except DBusError as e:
                raise _map_error(e.type, e.text, what, unit, self.address) from None
            except Exception as e:
                if not self._bus.connected:
                    raise ManagerDisconnected(f"{what}: connection lost ({e})") from e
                raise
            finally:
                if fence is not None:
                    self._fences.pop(msg.serial, None)
        if reply is None:  # dbus-fast answers pending calls with None on a clean disconnect
            raise ManagerDisconnected(f"{what}: connection lost")
        if reply.message_type is MessageType.ERROR:
            text = str(reply.body[0]) if reply.body else ""
            raise _map_error(reply.error_name or "", text, what, unit, self.address)
        return list(reply.body)

    async def _add_match(self, rule: str) -> None:
        await self._call(DBUS_PATH, DBUS, "AddMatch", "s", [rule], dest=DBUS)

    async def _remove_match(self, rule: str) -> None:
        if self._bus.connected:
            with contextlib.suppress(SystemdError):
                await self._call(DBUS_PATH, DBUS, "RemoveMatch", "s", [rule], dest=DBUS)

    async def _get_property(self, path: str, iface: str, name: str) -> Any:
        (v,) = await self._call(path, PROPS_IFACE, "Get", "ss", [iface, name])
        return v.value

    async def _get_all(
        self, path: str, iface: str, unit: str, fence: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        (props,) = await self._call(path, PROPS_IFACE, "GetAll", "s", [iface], unit=unit, fence=fence)
        return _unwrap(props)

    # ------------------------------------------------------------ manager

    async def reload(self, timeout: float = 120.0) -> None:
        """daemon-reload; systemd replies only after the reload (generators included) is done."""
        await self._call(MANAGER_PATH, MANAGER_IFACE, "Reload", timeout=timeout)

    async def version(self) -> str:
        """The manager's Version property, e.g. "252.38-1~deb12u1" (see `release`)."""
        return str(await self._get_property(MANAGER_PATH, MANAGER_IFACE, "Version"))

    async def release(self) -> Version:
        """The manager's version: 252.38 from "252.38-1~deb12u1"; 0.0 if unparsable."""
        return Version.find(await self.version()) or Version(0)

    async def system_state(self) -> str:
        """initializing, starting, running, degraded, maintenance, stopping."""
        return str(await self._get_property(MANAGER_PATH, MANAGER_IFACE, "SystemState"))

    async def instance(self) -> int:
        """When this manager process started (UserspaceTimestampMonotonic, µs): another value on a later
        connection means another manager (`systemctl --user exit` and a new login), not just a new bus."""
        return int(await self._get_property(MANAGER_PATH, MANAGER_IFACE, "UserspaceTimestampMonotonic"))

    async def environment(self) -> dict[str, str]:
        """The manager's environment block (what units inherit), as a dict."""
        entries: list[str] = await self._get_property(MANAGER_PATH, MANAGER_IFACE, "Environment")
        return dict(e.split("=", 1) for e in entries if "=" in e)

    async def list_units_by_patterns(
        self, states: Sequence[str] = (), patterns: Sequence[str] = ()
    ) -> list[UnitListEntry]:
        """Loaded units whose state is in `states` and name matches a glob in `patterns` (empty = any)."""
        (rows,) = await self._call(
            MANAGER_PATH, MANAGER_IFACE, "ListUnitsByPatterns", "asas", [list(states), list(patterns)]
        )
        return [UnitListEntry(*row) for row in rows]

    async def reset_failed(self, unit: str) -> None:
        with contextlib.suppress(UnitNotFound):  # not loaded means nothing to reset
            await self._call(MANAGER_PATH, MANAGER_IFACE, "ResetFailedUnit", "s", [unit], unit=unit)

    async def kill(self, unit: str, signal: int, whom: str = "all") -> None:
        """Send `signal` to the unit's processes (`whom`: main, control, all)."""
        await self._call(MANAGER_PATH, MANAGER_IFACE, "KillUnit", "ssi", [unit, whom, signal], unit=unit)

    # ------------------------------------------------------------ jobs

    async def start(self, unit: str, **job: Unpack[JobOptions]) -> str:
        """Start `unit` and wait for the job's result ("done", or JobFailed)."""
        return await self._job("start", "StartUnit", unit, **job)

    async def stop(self, unit: str, **job: Unpack[JobOptions]) -> str:
        return await self._job("stop", "StopUnit", unit, **job)

    async def restart(self, unit: str, **job: Unpack[JobOptions]) -> str:
        return await self._job("restart", "RestartUnit", unit, **job)

    async def try_restart(self, unit: str, **job: Unpack[JobOptions]) -> str:
        """Restart only if running; on an inactive unit the job is a no-op that ends "done"."""
        return await self._job("try-restart", "TryRestartUnit", unit, **job)

    async def _job(
        self,
        verb: str,
        method: str,
        unit: str,
        *,
        mode: str = "replace",
        raise_on_failure: bool = True,
        timeout: float | None = None,
    ) -> str:
        job: str | None = None
        self._jobs.begin()
        try:
            (job,) = await self._call(MANAGER_PATH, MANAGER_IFACE, method, "ss", [unit, mode], unit=unit)
        finally:
            fut = self._jobs.end(job)
        assert fut is not None and job is not None
        try:
            async with asyncio.timeout(timeout):
                result = await fut
        except TimeoutError:
            self._jobs.forget(job, fut)
            raise JobWaitTimeout(unit, verb, job, timeout or 0.0) from None
        except BaseException:
            self._jobs.forget(job, fut)
            raise
        if result != "done" and raise_on_failure:
            raise JobFailed(unit, verb, result, _JOB_HINTS.get(result, "").format(unit=unit))
        return result

    # ------------------------------------------------------------ units

    async def load(self, unit: str) -> str:
        """LoadUnit (GetUnit fails for units not loaded yet): the unit's object path."""
        (path,) = await self._call(MANAGER_PATH, MANAGER_IFACE, "LoadUnit", "s", [unit], unit=unit)
        return str(path)

    async def unit_state(self, unit: str) -> UnitState:
        path = await self.load(unit)
        if not _is_service(unit):
            return _state_from(unit, await self._get_all(path, UNIT_IFACE, unit), {})
        u, s = await asyncio.gather(
            self._get_all(path, UNIT_IFACE, unit), self._get_all(path, SERVICE_IFACE, unit)
        )
        return _state_from(unit, u, s)

    def watch(self, units: Iterable[str], *, initial: bool = True) -> UnitWatch:
        """A stream of UnitState for `units`, one per change signal (plus one each at the start when
        `initial`). Use as `async with mgr.watch([...]) as w: async for state in w: ...`."""
        return UnitWatch(self, list(units), initial)


class UnitWatch:
    """PropertiesChanged of some units as fresh UnitStates; no polling.

    Each signal carries the whole interface's changing properties, so a local copy of each unit's
    properties is kept current from the signals alone. Signals read before the initial GetAll reply
    are already reflected in it and are dropped (the reply is a fence in wire order).
    """

    def __init__(self, mgr: UserManager, units: list[str], initial: bool) -> None:
        self._mgr = mgr
        self._units = units
        self._initial = initial
        self._paths: dict[str, str] = {}  # path -> unit
        self._props: dict[str, dict[str, dict[str, Any]]] = {}  # path -> iface -> props
        self._before_snapshot: set[tuple[str, str]] = set()  # (path, iface) whose snapshot is pending
        self._queue: deque[tuple[str, str, dict[str, Any], list[str]]] = deque()
        self._ready: deque[UnitState] = deque()
        self._last: dict[str, UnitState] = {}  # path -> last state yielded
        self._wakeup = asyncio.Event()
        self._error: Exception | None = None
        self._ended = False  # aclose() ran: iteration stops quietly
        self._rules: list[str] = []

    async def __aenter__(self) -> Self:
        mgr = self._mgr
        paths = await asyncio.gather(*(mgr.load(u) for u in self._units))
        try:
            for unit, path in zip(self._units, paths, strict=True):
                self._paths[path] = unit
                self._props[path] = {UNIT_IFACE: {}, SERVICE_IFACE: {}}
                mgr._watchers.setdefault(path, []).append(self)
                rule = (
                    f"type='signal',sender='{SYSTEMD}',path='{path}',"
                    f"interface='{PROPS_IFACE}',member='PropertiesChanged'"
                )
                await mgr._add_match(rule)
                self._rules.append(rule)
            await asyncio.gather(*(self._snapshot(p, i) for p in self._paths for i in self._ifaces(p)))
        except BaseException:
            await self.aclose()
            raise
        for p in self._paths:
            self._last[p] = self._state(p)
            if self._initial:
                self._ready.append(self._last[p])
        return self

    def _ifaces(self, path: str) -> tuple[str, ...]:
        return (SERVICE_IFACE, UNIT_IFACE) if _is_service(self._paths[path]) else (UNIT_IFACE,)

    async def _snapshot(self, path: str, iface: str) -> None:
        key = (path, iface)
        self._before_snapshot.add(key)
        props = await self._mgr._get_all(
            path, iface, self._paths[path], fence=lambda: self._before_snapshot.discard(key)
        )
        self._props[path][iface].update(props)

    async def __aexit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for path in self._paths:
            watches = self._mgr._watchers.get(path, [])
            if self in watches:
                watches.remove(self)
            if not watches:
                self._mgr._watchers.pop(path, None)
        rules, self._rules = self._rules, []
        for rule in rules:
            await self._mgr._remove_match(rule)
        self._ended = True
        self._wakeup.set()

    def _feed(self, path: str, iface: str, changed: dict[str, Any], invalidated: list[str]) -> None:
        if (path, iface) in self._before_snapshot or iface not in (UNIT_IFACE, SERVICE_IFACE):
            return
        self._queue.append((path, iface, _unwrap(changed), invalidated))
        self._wakeup.set()

    def _close(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
        self._wakeup.set()

    def _state(self, path: str) -> UnitState:
        p = self._props[path]
        return _state_from(self._paths[path], p[UNIT_IFACE], p[SERVICE_IFACE])

    def _apply(self, path: str, iface: str, changed: dict[str, Any], invalidated: list[str]) -> list[str]:
        self._props[path][iface].update(changed)
        return [name for name in invalidated if name in _STATE_PROPS]

    def __aiter__(self) -> AsyncIterator[UnitState]:
        return self

    async def __anext__(self) -> UnitState:
        while not self._ready:
            if self._queue:
                path, iface, changed, invalidated = self._queue.popleft()
                stale = self._apply(path, iface, changed, invalidated)
                # systemd sends a service's own interface, then Unit, for one change: yield once, with
                # both halves applied, else a state mixes old and new (active/running with MainPID 0)
                if iface == SERVICE_IFACE:
                    if not self._queue:
                        await self._more(_PAIR_GRACE)
                    if self._queue and self._queue[0][:2] == (path, UNIT_IFACE):
                        _, iface2, changed2, invalidated2 = self._queue.popleft()
                        stale += self._apply(path, iface2, changed2, invalidated2)
                if stale:  # properties sent without values: fetch them (none of ours on systemd 252)
                    for i in self._ifaces(path):
                        self._props[path][i].update(await self._mgr._get_all(path, i, self._paths[path]))
                state = self._state(path)
                if state != self._last.get(path):  # systemd re-sends unchanged values: skip repeats
                    self._last[path] = state
                    self._ready.append(state)
            elif self._ended:
                raise StopAsyncIteration
            elif self._error is not None:
                raise self._error
            else:
                self._wakeup.clear()
                await self._wakeup.wait()
        return self._ready.popleft()

    async def _more(self, timeout: float) -> None:
        """Wait up to `timeout` for another signal (or the end)."""
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()
