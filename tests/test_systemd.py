"""sparc_agent.host.systemd against real, private `systemd --user` managers (see shared/test-host.md).

Each e2e test gets its own manager (the `user_manager` fixture of tests/support/testhost.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import support.testhost as testhost

from sparc_agent.errors import (
    EnvironmentProblem,
    JobFailed,
    JobWaitTimeout,
    ManagerDisconnected,
    NoUserManager,
    SystemdError,
    UnitNotFound,
)
from sparc_agent.host.systemd import UnitState, UserManager, _JobTracker

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# ---------------------------------------------------------------- a private user manager per test
# `user_manager` (tests/support/testhost.py) gives each test its own `systemd --user` in its own cgroup
# subtree and XDG dirs, and stops it by PID at teardown whatever the test did.


def bus(um: testhost.UserManager) -> str:
    return um.env["DBUS_SESSION_BUS_ADDRESS"]


def write_unit(um: testhost.UserManager, name: str, text: str) -> None:
    (um.unit_dir / name).write_text(text)


async def connect(um: testhost.UserManager) -> UserManager:
    return await UserManager.connect(bus(um))


SLEEPER = "[Service]\nExecStart=/bin/sleep 1000\n"


# ---------------------------------------------------------------- unit tests (no manager)


@pytest.mark.unit
def test_job_result_read_before_the_reply_is_kept() -> None:
    async def main() -> None:
        t = _JobTracker()
        t.begin()
        t.begin()
        t.removed("/org/freedesktop/systemd1/job/7", "done")  # finished before we saw StartUnit's reply
        t.removed("/org/freedesktop/systemd1/job/99", "done")  # someone else's job
        fut = t.end("/org/freedesktop/systemd1/job/7")
        assert fut is not None and fut.done() and fut.result() == "done"
        fut2 = t.end("/org/freedesktop/systemd1/job/8")  # last dispatch: leftovers are dropped
        assert fut2 is not None and not fut2.done()
        assert t._early == {}
        t.removed("/org/freedesktop/systemd1/job/8", "failed")
        assert fut2.result() == "failed"
        t.removed("/org/freedesktop/systemd1/job/100", "done")  # nothing in flight: not kept
        assert t._early == {} and t.pending == 0

        # systemd merged two starts into one job: both callers get its result, early or not
        for early in (True, False):
            t.begin()
            t.begin()
            if early:
                t.removed("/job/9", "done")
            f1, f2 = t.end("/job/9"), t.end("/job/9")
            if not early:
                t.removed("/job/9", "done")
            assert f1 is not None and f2 is not None and f1.result() == f2.result() == "done"
            assert t.pending == 0 and t._early == {}

    run(main())


@pytest.mark.unit
def test_no_bus_is_no_user_manager(tmp_path: Path) -> None:
    addr = f"unix:path={tmp_path}/nothing/bus"
    with pytest.raises(NoUserManager) as ei:
        run(UserManager.connect(addr))
    assert isinstance(ei.value, EnvironmentProblem) and ei.value.exit_code == 3
    assert addr in str(ei.value) and "loginctl enable-linger" in str(ei.value)


@pytest.mark.unit
def test_no_bus_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(NoUserManager, match=f"unix:path={tmp_path}/bus"):
        run(UserManager.connect())


# ---------------------------------------------------------------- against a real user manager


@pytest.mark.e2e
def test_start_state_stop(user_manager: testhost.UserManager) -> None:
    um = user_manager
    write_unit(um, "sleeper.service", SLEEPER)

    async def main() -> None:
        async with await connect(um) as mgr:
            await mgr.reload()
            assert (await mgr.release()).major >= 240 and str(
                (await mgr.release()).major
            ) in await mgr.version()
            env = await mgr.environment()
            assert env.get("XDG_RUNTIME_DIR") == str(um.run_dir)
            assert await mgr.start("sleeper.service") == "done"
            st = await mgr.unit_state("sleeper.service")
            assert (st.load_state, st.active_state, st.sub_state) == ("loaded", "active", "running")
            assert st.main_pid > 0 and Path(f"/proc/{st.main_pid}").exists()
            assert st.name == "sleeper.service" and st.fragment_path == str(um.unit_dir / "sleeper.service")
            assert len(st.invocation_id) == 32 and st.active_enter_timestamp > 1_600_000_000_000_000
            assert st.result == "success" and st.n_restarts == 0
            rows = await mgr.list_units_by_patterns(["active"], ["sleep*"])
            assert [r.name for r in rows] == ["sleeper.service"]
            assert await mgr.start("sleeper.service") == "done"  # already active: a job that ends at once
            await mgr.kill("sleeper.service", signal.SIGTERM, "main")
            assert await mgr.stop("sleeper.service") == "done"
            st = await mgr.unit_state("sleeper.service")
            assert (st.active_state, st.sub_state, st.main_pid) == ("inactive", "dead", 0)

    run(main())


@pytest.mark.e2e
def test_failing_and_oneshot_units(user_manager: testhost.UserManager) -> None:
    um = user_manager
    write_unit(um, "bad.service", "[Service]\nType=oneshot\nExecStart=/bin/false\n")
    write_unit(um, "once.service", "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n")
    write_unit(um, "needsbad.service", "[Unit]\nRequires=bad.service\nAfter=bad.service\n" + SLEEPER)

    async def main() -> None:
        async with await connect(um) as mgr:
            await mgr.reload()
            assert await mgr.start("once.service") == "done"
            st = await mgr.unit_state("once.service")
            assert (st.active_state, st.sub_state) == ("active", "exited")

            with pytest.raises(JobFailed) as ei:
                await mgr.start("bad.service")
            assert ei.value.result == "failed" and ei.value.unit == "bad.service"
            assert "bad.service" in str(ei.value) and "journalctl" in str(ei.value)
            st = await mgr.unit_state("bad.service")
            assert (st.active_state, st.result, st.exec_main_status) == ("failed", "exit-code", 1)
            assert await mgr.start("bad.service", raise_on_failure=False) == "failed"

            with pytest.raises(JobFailed) as ei:
                await mgr.start("needsbad.service")
            assert ei.value.result == "dependency"

            await mgr.reset_failed("bad.service")
            assert (await mgr.unit_state("bad.service")).active_state == "inactive"
            await mgr.reset_failed("never-loaded.service")  # nothing to reset is not an error

    run(main())


@pytest.mark.e2e
def test_restart_changes_main_pid_not_n_restarts(user_manager: testhost.UserManager) -> None:
    um = user_manager
    write_unit(um, "sleeper.service", SLEEPER)

    async def main() -> None:
        async with await connect(um) as mgr:
            await mgr.reload()
            assert await mgr.try_restart("sleeper.service") == "done"  # inactive: a no-op
            assert (await mgr.unit_state("sleeper.service")).active_state == "inactive"
            await mgr.start("sleeper.service")
            before = await mgr.unit_state("sleeper.service")
            assert await mgr.restart("sleeper.service") == "done"
            after = await mgr.unit_state("sleeper.service")
            assert after.is_active and after.main_pid not in (0, before.main_pid)
            assert after.n_restarts == before.n_restarts == 0  # NRestarts counts automatic restarts only
            assert after.invocation_id != before.invocation_id
            assert await mgr.try_restart("sleeper.service") == "done"
            assert (await mgr.unit_state("sleeper.service")).main_pid != after.main_pid

    run(main())


@pytest.mark.e2e
def test_restart_always_seen_through_watch(user_manager: testhost.UserManager) -> None:
    um = user_manager
    write_unit(
        um, "phoenix.service", "[Service]\nExecStart=/bin/sleep 1000\nRestart=always\nRestartSec=200ms\n"
    )

    async def main() -> None:
        async with await connect(um) as mgr:
            await mgr.reload()
            await mgr.start("phoenix.service")
            seen: list[UnitState] = []
            async with mgr.watch(["phoenix.service"]) as changes:
                first = await anext(changes)  # the initial snapshot
                assert first.is_active and first.n_restarts == 0
                os.kill(first.main_pid, signal.SIGKILL)
                async with asyncio.timeout(10):
                    async for st in changes:
                        seen.append(st)
                        # running, and its start job done (a state may show running with the job queued)
                        if st.n_restarts == 1 and st.sub_state == "running" and st.job == 0:
                            break
            final = seen[-1]
            assert final.main_pid not in (0, first.main_pid) and final.is_active
            assert "auto-restart" in {s.sub_state for s in seen}  # the transition, not just the end state
            # each state is one coherent emission (Service + Unit halves), and repeats are not yielded
            assert not [s for s in seen if s.sub_state == "running" and s.main_pid == 0]
            assert all(a != b for a, b in zip([first, *seen], seen, strict=False))
            assert final.invocation_id != first.invocation_id
            assert final == await mgr.unit_state("phoenix.service")
            assert not mgr._watchers  # the watch unregistered itself

    run(main())


@pytest.mark.e2e
def test_load_unit_never_loaded_and_missing(user_manager: testhost.UserManager) -> None:
    um = user_manager

    async def main() -> None:
        async with await connect(um) as mgr:
            write_unit(um, "late.service", SLEEPER)  # written after start-up, no reload: LoadUnit finds it
            st = await mgr.unit_state("late.service")
            assert (st.load_state, st.active_state, st.exists) == ("loaded", "inactive", True)
            missing = await mgr.unit_state("nope.service")
            assert (missing.load_state, missing.exists) == ("not-found", False)
            assert "nope.service" in missing.load_error or missing.load_error
            with pytest.raises(UnitNotFound, match=r"nope\.service"):
                await mgr.start("nope.service")
            with pytest.raises(SystemdError, match=r"late\.service"):
                await mgr.start("late.service", mode="no-such-mode")
            target = await mgr.unit_state("default.target")
            assert target.load_state == "loaded" and target.main_pid == 0

    run(main())


@pytest.mark.e2e
def test_concurrent_starts_of_one_unit_share_a_job(user_manager: testhost.UserManager) -> None:
    um = user_manager
    write_unit(
        um, "slowstart.service", "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sleep 0.3\n"
    )

    async def main() -> None:
        async with await connect(um) as mgr:
            results = await asyncio.gather(*(mgr.start("slowstart.service") for _ in range(5)))
            assert results == ["done"] * 5
            assert mgr._jobs.pending == 0

    run(main())


@pytest.mark.e2e
def test_job_wait_timeout(user_manager: testhost.UserManager) -> None:
    um = user_manager
    write_unit(um, "slowpoke.service", "[Service]\nType=oneshot\nExecStart=/bin/sleep 1000\n")

    async def main() -> None:
        async with await connect(um) as mgr:
            with pytest.raises(JobWaitTimeout, match=r"slowpoke\.service"):
                await mgr.start("slowpoke.service", timeout=0.3)
            assert (await mgr.unit_state("slowpoke.service")).active_state == "activating"
            assert await mgr.stop("slowpoke.service") == "done"  # replaces the start job (canceled)
            assert mgr._jobs.pending == 0

    run(main())


@pytest.mark.e2e
def test_200_concurrent_starts(user_manager: testhost.UserManager) -> None:
    um = user_manager
    n = 200
    write_unit(um, "many@.service", SLEEPER)

    async def main() -> float:
        async with await connect(um) as mgr:
            await mgr.reload()
            t0 = time.monotonic()
            results = await asyncio.gather(*(mgr.start(f"many@{i}.service") for i in range(n)))
            elapsed = time.monotonic() - t0
            assert results == ["done"] * n
            rows = await mgr.list_units_by_patterns(["active"], ["many@*.service"])
            assert len(rows) == n
            states = await asyncio.gather(*(mgr.unit_state(f"many@{i}.service") for i in range(n)))
            assert all(s.sub_state == "running" and s.main_pid for s in states)
            assert len({s.main_pid for s in states}) == n
            assert mgr._jobs.pending == 0 and mgr._jobs._early == {}
            return elapsed

    elapsed = run(main())
    print(f"\n{n} concurrent starts: {elapsed:.2f} s")


@pytest.mark.e2e
def test_manager_exit_fires_disconnected(user_manager: testhost.UserManager) -> None:
    um = user_manager
    write_unit(um, "slowpoke.service", "[Service]\nType=oneshot\nExecStart=/bin/sleep 1000\n")

    async def main() -> None:
        mgr = await connect(um)
        try:
            pending = asyncio.create_task(mgr.start("slowpoke.service"))
            await asyncio.sleep(0.2)
            assert not pending.done() and not mgr.disconnected.is_set()
            os.kill(um.pid, signal.SIGTERM)  # = systemctl --user exit
            async with asyncio.timeout(15):
                await mgr.wait_disconnected()
                # the start job is canceled as the manager stops, or the bus goes first: never a hang
                with pytest.raises((ManagerDisconnected, JobFailed)):
                    await pending
            assert not mgr.connected
            with pytest.raises(ManagerDisconnected):
                await mgr.unit_state("slowpoke.service")
        finally:
            await mgr.close()

    run(main())
