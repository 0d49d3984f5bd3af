"""Probes inside the pod's network namespace: where a probe runs, the wire, the prober and its client.

Unit tests: the prober runs here as a plain child process (no namespace: that is the e2e's part,
tests/test_inpod_e2e.py), its "infra process" is a `sleep` this test owns, and the client's spawn is
pointed at it without nsenter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sparc_agent.agent.supervisor import plan_from_profile
from sparc_agent.apply.fastpath import spec_from_plan
from sparc_agent.host import netns
from sparc_agent.host.process import Process, spawn
from sparc_agent.probes import inpod
from sparc_agent.probes.base import ProbeOutcome
from sparc_agent.probes.exec import ExecSpec
from sparc_agent.probes.grpc import GrpcSpec
from sparc_agent.probes.http import HttpSpec
from sparc_agent.probes.inpod import POD_GONE, PodProber, PodProbers, decode_probe, encode_probe
from sparc_agent.probes.stun import StunSpec
from sparc_agent.probes.tcp import TcpSpec
from sparc_agent.probes.websocket import WebSocketSpec
from sparc_agent.profile.load import load_profile
from sparc_agent.profile.rules import probe_pod

REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- where a probe runs


PROFILE = """\
apiVersion: sparc-agent/v1
name: demo
pod:
  ports: ["8080:8080", "18000:8000", "3478:3478/tcp"]
services:
  published: {image: x, health: {websocket: {port: 8080}}}
  mapped: {image: x, health: {http: {port: 18000}}}
  inside: {image: x, health: {http: {port: 8000, path: /health}}}
  stun-tcp-only: {image: x, health: {stun: {port: 3478}}}
  exec: {image: x, health: {exec: {command: ["true"]}}}
  none: {image: x}
"""


@pytest.fixture
def profile(tmp_path: Path) -> Any:
    path = tmp_path / "p.yaml"
    path.write_text(PROFILE)
    return load_profile(str(path)).profile


def test_unpublished_probe_ports_run_inside_the_pod(profile: Any) -> None:
    where = {name: probe_pod(profile, name) for name in profile.services}
    assert where == {
        "published": None,  # host port: probed on the host, as a client there reaches it
        "mapped": None,
        "inside": "demo",  # 8000 is a container port only (18000 publishes it): probed inside
        "stun-tcp-only": "demo",  # 3478/udp is not published; 3478/tcp does not count
        "exec": None,
        "none": None,
    }


def test_the_plan_names_the_pod_and_the_spec_ignores_it(profile: Any) -> None:
    plans = {s.name: s.probe for s in plan_from_profile(profile, 1).services}
    assert plans["inside"] == {
        "kind": "http",
        "port": 8000,
        "path": "/health",
        "status": [200, 399],
        "timeout_s": 2.0,
        "pod": "demo",
    }
    assert "pod" not in plans["published"] and "pod" not in plans["exec"]
    assert spec_from_plan(json.loads(json.dumps(plans["inside"]))) == HttpSpec(
        port=8000, path="/health", status=(200, 399), timeout_s=2.0
    )


# ---------------------------------------------------------------- the wire


@pytest.mark.parametrize(
    "spec",
    [
        TcpSpec(port=1, timeout_s=0.5),
        HttpSpec(port=8000, path="/health", status=(200, 204), timeout_s=3.0),
        WebSocketSpec(port=8080, path="/ws", timeout_s=1.0),
        GrpcSpec(port=50051, service="riva", timeout_s=2.0),
        StunSpec(port=3478, timeout_s=1.5),
    ],
)
def test_specs_cross_the_wire_unchanged(spec: Any) -> None:
    assert decode_probe(json.loads(json.dumps(encode_probe(spec)))) == spec


def test_exec_probes_do_not_cross_into_the_pod() -> None:
    with pytest.raises(ValueError, match="does not run in a pod"):
        encode_probe(ExecSpec(command=("true",)))


# ---------------------------------------------------------------- the prober process


@contextlib.contextmanager
def infra() -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in for the pod's infra process: the prober exits when it does."""
    proc = subprocess.Popen(["sleep", "300"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def listener() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def prober_argv(pid: int) -> list[str]:
    return [sys.executable, "-P", "-m", "sparc_agent.probes.inpod", str(pid)]


def test_prober_answers_each_request_and_exits_when_stdin_closes() -> None:
    with infra() as sleeper, listener() as port:
        requests = [
            {"id": 1, "probe": encode_probe(TcpSpec(port=port, timeout_s=2.0))},
            {"id": 2, "probe": encode_probe(TcpSpec(port=1, timeout_s=2.0))},
        ]
        lines = "".join(json.dumps(r) + "\n" for r in requests) + "not json\n"
        done = subprocess.run(prober_argv(sleeper.pid), input=lines.encode(), capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    hello, *answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert hello == {"ready": True, "netns": os.stat("/proc/self/ns/net").st_ino}
    by_id = {a["id"]: a for a in answers}
    assert by_id[1]["outcome"] == "ok" and by_id[1]["detail"] == "connected"
    assert by_id[2]["outcome"] == "failed" and by_id[2]["detail"] == "Connection refused"
    assert by_id[0]["outcome"] == "error" and "bad request" in by_id[0]["detail"]


def test_prober_exits_pod_gone_when_the_infra_process_exits() -> None:
    with (
        infra() as sleeper,
        subprocess.Popen(prober_argv(sleeper.pid), stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc,
    ):
        try:
            assert proc.stdout is not None
            assert json.loads(proc.stdout.readline())["ready"] is True
            sleeper.kill()
            assert proc.wait(timeout=10) == POD_GONE
        finally:
            proc.kill()


# ---------------------------------------------------------------- the client


class FakePod:
    """infra_pid and spawn_inside for one pod whose infra process is a `sleep` we own (no nsenter)."""

    def __init__(self) -> None:
        self.infra: subprocess.Popen[bytes] | None = subprocess.Popen(["sleep", "300"])
        self.spawned: list[Process] = []

    async def infra_pid(self, pod: str) -> int:
        if self.infra is None or self.infra.poll() is not None:
            raise netns.PodNotRunning(f"pod {pod} does not exist")
        return self.infra.pid

    async def spawn_inside(self, pid: int, argv: list[str]) -> Process:
        proc = await spawn(argv, stdin="pipe")
        self.spawned.append(proc)
        return proc

    def stop_infra(self) -> None:
        if self.infra is not None:
            self.infra.kill()
            self.infra.wait()
            self.infra = None


@pytest.fixture
def pod(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePod]:
    fake = FakePod()
    monkeypatch.setattr(netns, "infra_pid", fake.infra_pid)
    monkeypatch.setattr(netns, "spawn_inside", fake.spawn_inside)
    monkeypatch.setattr(inpod, "own_netns", lambda: -1)  # here the prober shares our namespace
    try:
        yield fake
    finally:
        fake.stop_infra()
        for proc in fake.spawned:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


def test_one_prober_serves_every_probe_of_a_pod(pod: FakePod) -> None:
    async def go() -> None:
        with listener() as port:
            async with PodProbers() as probers:
                results = await asyncio.gather(
                    *(probers.run(TcpSpec(port=port, timeout_s=2.0), pod="demo") for _ in range(5)),
                    probers.run(TcpSpec(port=1, timeout_s=2.0), pod="demo"),
                )
                assert [r.outcome for r in results] == [ProbeOutcome.OK] * 5 + [ProbeOutcome.FAILED]
                assert results[-1].detail == "Connection refused (inside pod demo)"
                assert probers.prober("demo").starts == 1 and len(pod.spawned) == 1
            assert pod.spawned[0].returncode == 0  # closed: stdin EOF, it exited by itself

    asyncio.run(go())


@pytest.mark.parametrize("how", ["killed between probes", "killed during a probe", "hung"])
def test_a_dead_or_hung_prober_is_our_error_and_is_replaced(pod: FakePod, how: str) -> None:
    async def go() -> None:
        with listener() as port, socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen()  # accepts, never answers: an HTTP probe of it waits its whole timeout
            prober = PodProber("demo")
            assert (await prober.probe(TcpSpec(port=port, timeout_s=0.5))).ok
            first = prober.pid
            assert first is not None
            if how == "killed during a probe":
                slow = asyncio.ensure_future(
                    prober.probe(HttpSpec(port=silent.getsockname()[1], timeout_s=5))
                )
                await asyncio.sleep(0.5)
                os.kill(first, signal.SIGKILL)
                broken = await slow
            else:
                os.kill(first, signal.SIGKILL if how == "killed between probes" else signal.SIGSTOP)
                while how != "hung" and prober.pid is not None:  # the agent noticed (EOF) before probing
                    await asyncio.sleep(0.01)
                broken = await prober.probe(TcpSpec(port=port, timeout_s=0.5))
            assert broken.outcome is ProbeOutcome.ERROR, broken  # never FAILED: not the service's fault
            want = "did not answer within 1.5s: killed" if how == "hung" else "died (killed by signal 9)"
            assert broken.detail.startswith(f"in-pod prober of pod demo {want}"), broken
            assert "inside pod" not in broken.detail  # ours, not something seen inside the pod
            again = await prober.probe(TcpSpec(port=port, timeout_s=0.5))
            assert again.ok, again
            assert prober.starts == 2 and prober.pid not in (None, first)
            await prober.close()
            assert all(p.returncode is not None for p in pod.spawned)

    asyncio.run(go())


def test_a_stopped_pod_fails_the_probe(pod: FakePod) -> None:
    async def go() -> None:
        with listener() as port:
            prober = PodProber("demo")
            assert (await prober.probe(TcpSpec(port=port, timeout_s=0.5))).ok
            pod.stop_infra()
            assert await asyncio.wait_for(pod.spawned[0].wait(), 10) == POD_GONE
            gone = await prober.probe(TcpSpec(port=port, timeout_s=0.5))
            assert gone.outcome is ProbeOutcome.FAILED and gone.detail == "pod demo does not exist"
            await prober.close()

    asyncio.run(go())


def test_a_prober_that_cannot_start_is_our_error(pod: FakePod, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(pid: int, argv: list[str]) -> Process:
        return await pod.spawn_inside(
            pid, [sys.executable, "-c", "import sys; sys.exit('nsenter: no way in')"]
        )

    monkeypatch.setattr(netns, "spawn_inside", broken)
    result = asyncio.run(PodProber("demo").probe(TcpSpec(port=1, timeout_s=0.5)))
    assert result.outcome is ProbeOutcome.ERROR
    assert result.detail == "in-pod prober of pod demo did not start: exit 1: nsenter: no way in"


def test_a_prober_in_our_own_namespace_is_refused(pod: FakePod, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inpod, "own_netns", lambda: os.stat("/proc/self/ns/net").st_ino)
    with listener() as port:
        result = asyncio.run(PodProber("demo").probe(TcpSpec(port=port, timeout_s=0.5)))
    assert result.outcome is ProbeOutcome.ERROR and "own network namespace" in result.detail


def test_host_probes_do_not_start_a_prober(pod: FakePod) -> None:
    async def go() -> None:
        with listener() as port:
            async with PodProbers() as probers:
                assert (await probers.run(TcpSpec(port=port, timeout_s=1.0))).ok
        assert pod.spawned == []

    asyncio.run(go())


def test_nsenter_argv_rootful_and_rootless(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert netns.enter_argv(42, ["x"], rootless=False) == ["/usr/bin/nsenter", "-t", "42", "-n", "--", "x"]
    assert netns.enter_argv(42, ["x"], rootless=True) == [
        "/usr/bin/nsenter",
        "-t",
        "42",
        "-U",
        "--preserve-credentials",
        "-n",
        "--",
        "x",
    ]
