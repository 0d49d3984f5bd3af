"""host.payload: a container's own processes under conmon, on real processes (a stand-in conmon: a
process named so, with a shell and its child below it, the child frozen with SIGSTOP like a hung app)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sparc_agent.host.payload import Payload, descendants

pytestmark = pytest.mark.unit

# names itself "conmon", starts `sh` with a `sleep` under it, prints both PIDs, then waits
_CONMON = """
import subprocess, sys, time
open("/proc/self/comm", "w").write(sys.argv[1])
sh = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
print(sh.pid, sh.stdout.readline().strip(), flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    """Running, stopped or sleeping; not a zombie, not gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def fake_conmon(name: str = "conmon") -> Iterator[tuple[int, int, int]]:
    """(conmon, sh, sleep) PIDs; the sleep is SIGSTOPped. Everything is killed at the end."""
    proc = subprocess.Popen([sys.executable, "-c", _CONMON, name], stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert proc.stdout is not None
        sh, sleep = (int(p) for p in proc.stdout.readline().split())
        pids = [sh, sleep]
        os.kill(sleep, signal.SIGSTOP)
        yield proc.pid, sh, sleep
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()


def wait_dead(*pids: int) -> bool:
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not any(alive(p) for p in pids)


def test_the_container_processes_under_conmon_are_killed_and_conmon_is_not() -> None:
    with fake_conmon() as (conmon, sh, sleep):
        assert descendants(conmon) == [sh, sleep]
        with Payload(conmon) as payload:
            assert len(payload) == 2
            assert payload.kill() == 2
        assert wait_dead(sh, sleep)  # the stopped one too: SIGKILL needs no SIGCONT
        assert alive(conmon)  # it reports the exit to podman


def test_a_main_process_that_is_not_conmon_is_the_container_and_is_killed_too() -> None:
    with fake_conmon("catatonit") as (init, sh, sleep):
        with Payload(init) as payload:
            assert len(payload) == 3 and payload.kill() == 3
        assert wait_dead(init, sh, sleep)


def test_nothing_to_kill_without_a_main_process_or_once_it_is_gone() -> None:
    with Payload(0) as none:
        assert len(none) == 0 and none.kill() == 0
    proc = subprocess.Popen(["sleep", "60"])
    with Payload(proc.pid) as payload:
        assert len(payload) == 1
        proc.kill()
        proc.wait()  # reaped: its PID is free for the kernel to hand out again
        assert payload.kill() == 0  # the pidfd still names the dead process, never the PID's next owner


def test_another_users_processes_are_counted_as_denied_not_raised() -> None:
    """The agent runs as the user; a process it may not signal must leave it a way out (KillUnit)."""
    proc = subprocess.Popen(["sleep", "60"])  # root's: not the nobody user's to signal
    read, write = os.pipe()
    try:
        child = os.fork()
        if child == 0:  # as nobody, with the module already loaded (no file to read as that user)
            code = 1
            try:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
                with Payload(proc.pid) as payload:
                    os.write(write, f"{len(payload)} {payload.kill()} {payload.denied}".encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        _, status = os.waitpid(child, 0)
        answer = os.read(read, 100).decode()
        assert os.waitstatus_to_exitcode(status) == 0 and answer == "1 0 1", answer
        assert alive(proc.pid)
    finally:
        os.close(read)
        proc.kill()
        proc.wait()
