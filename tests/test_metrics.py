"""The agent's metrics: config, event -> samples, the scrape-time collector, the asyncio server, promtool."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.testhost import require_tool

from sparc_agent.agent.metrics import Metrics, MetricsConfig, read_config, restart_reason, serve
from sparc_agent.agent.supervisor import ServiceMachine, ServicePlan, State, UnitView
from sparc_agent.errors import InvalidInput

pytestmark = pytest.mark.unit


def test_config_off_by_default_loopback_by_default(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    assert read_config(path) is None
    path.write_text("# nothing yet\n")
    assert read_config(path) is None
    path.write_text("metrics: {port: 9464}\n")
    assert read_config(path) == MetricsConfig("127.0.0.1", 9464)
    path.write_text("metrics: {port: 9464, address: 10.1.2.3}\n")
    assert read_config(path) == MetricsConfig("10.1.2.3", 9464)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metrics: {port: 0}", "metrics.port: expected a port 1-65535, not 0"),
        ("metrics: {port: '9464'}", "metrics.port: expected a port 1-65535"),
        ("metrics: {port: 9464, address: localhost}", "metrics.address: expected an IP address"),
        ("metrics: {port: 9464, listen: x}", "expected {port: N, address: IP}"),
        ("metric: {port: 1}", "expected a mapping with the key `metrics` only"),
        ("metrics: [", "not YAML"),
    ],
)
def test_bad_config_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInput) as info:
        read_config(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


@pytest.mark.parametrize(
    ("event", "label"),
    [
        ({"by": "systemd", "reason": "systemd Restart= after exit-code"}, "crash"),
        ({"by": "agent", "reason": "unit failed (exit-code)"}, "crash"),
        ({"by": "agent", "reason": "unhealthy: timed out after 1s"}, "unhealthy"),
        ({"by": "agent", "reason": "dependency riva recovered"}, "dependency"),
        ({"by": "agent", "reason": "user manager restarted: start again"}, "manager_restart"),
        ({"by": "agent", "reason": "restart failed: job failed"}, "retry"),
        ({"by": "agent", "reason": "something new"}, "other"),
    ],
)
def test_restart_reasons_are_bounded(event: dict[str, str], label: str) -> None:
    assert restart_reason(event) == label


def _machine(name: str, state: State, since: float, gpu: bool = False) -> ServiceMachine:
    plan = ServicePlan(
        name, f"s-{name}.service", f"s-{name}", gpu=gpu, gpu_memory_budget=3 << 30 if gpu else None
    )
    m = ServiceMachine(plan, since)
    m.state = state
    return m


@pytest.fixture
def metrics() -> Metrics:
    machines = [
        ("s", _machine("riva", State.HEALTHY, 0.0, gpu=True)),
        ("s", _machine("mas", State.BACKOFF, 0.0)),
    ]

    def it() -> Iterator[tuple[str, ServiceMachine]]:
        yield from machines

    return Metrics(it, lambda: {"s-riva.service": 3590 << 20, "other.service": 1, "": 5 << 20})


def _samples(text: str) -> set[str]:
    return {line for line in text.splitlines() if line and not line.startswith("#")}


def test_events_and_present_state_become_samples(metrics: Metrics) -> None:
    probe = {
        "event": "probe",
        "service": "mas",
        "kind": "http",
        "outcome": "ok",
        "latency_s": 0.004,
        "phase": "",
    }
    metrics.on_event("s", probe)
    metrics.on_event("s", {**probe, "outcome": "failed", "latency_s": 1.0})
    webrtc = {
        "event": "probe",
        "service": "unity",
        "kind": "webrtc",
        "outcome": "failed",
        "phase": "ice_connect",
    }
    metrics.on_event("s", {**webrtc, "latency_s": 5.0})
    metrics.on_event(
        "s", {**webrtc, "outcome": "ok", "phase": "first_frame", "latency_s": 2.0, "first_frame_s": 1.25}
    )
    metrics.on_event("s", {"event": "restart", "service": "mas", "by": "agent", "reason": "unhealthy: x"})
    metrics.on_event("s", {"event": "state", "service": "mas", "previous": "HEALTHY", "reason": "x"})
    samples = _samples(metrics.exposition().decode())
    assert 'sparc_probe_duration_seconds_count{kind="http",service="mas",stack="s"} 2.0' in samples
    assert (
        'sparc_probe_duration_seconds_bucket{kind="http",le="0.005",service="mas",stack="s"} 1.0' in samples
    )
    assert (
        'sparc_probe_failures_total{kind="http",outcome="failed",phase="probe",service="mas",stack="s"} 1.0'
        in samples
    )
    assert (
        'sparc_probe_failures_total{kind="webrtc",outcome="failed",phase="ice_connect",service="unity",stack="s"}'
        " 1.0" in samples
    )
    assert 'sparc_media_first_frame_seconds{service="unity",stack="s"} 1.25' in samples
    assert 'sparc_restarts_total{by="agent",reason="unhealthy",service="mas",stack="s"} 1.0' in samples
    # the other reasons exist from 0 (the first restart must show in increase())
    assert 'sparc_restarts_total{by="systemd",reason="crash",service="mas",stack="s"} 0.0' in samples
    assert 'sparc_restarts_total{by="agent",reason="crash",service="unity",stack="s"} 0.0' in samples
    assert 'sparc_service_state{service="mas",stack="s",state="BACKOFF"} 1.0' in samples
    assert 'sparc_service_state{service="mas",stack="s",state="HEALTHY"} 0.0' in samples
    assert sum(1 for s in samples if s.startswith('sparc_service_state{service="riva"')) == len(State)
    assert 'sparc_service_gpu_memory_bytes{service="riva",stack="s"} 3.76438784e+09' in samples
    assert not any(s.startswith('sparc_service_gpu_memory_bytes{service="mas"') for s in samples)
    assert 'sparc_service_gpu_memory_budget_bytes{service="riva",stack="s"} 3.221225472e+09' in samples
    assert "sparc_gpu_memory_unattributed_bytes 5.24288e+06" in samples
    assert any(s.startswith('sparc_agent_build_info{python="') for s in samples)
    assert any(s.startswith('sparc_service_last_transition_timestamp_seconds{service="mas"') for s in samples)


def test_promtool_accepts_the_exposition(metrics: Metrics) -> None:
    require_tool("promtool", "scripts/test-host-setup.sh installs prometheus")
    metrics.on_event(
        "s", {"event": "restart", "service": "mas", "by": "systemd", "reason": "systemd Restart="}
    )
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=metrics.exposition(), capture_output=True, timeout=30
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == b"" and proc.stderr.strip() == b""  # no lint findings either


def test_server_answers_get_metrics_only(metrics: Metrics) -> None:
    async def go() -> list[bytes]:
        server = await serve(metrics, MetricsConfig("127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        out = []
        for request in (
            b"GET /metrics HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"POST /metrics HTTP/1.1\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            out.append(await reader.read())
            writer.close()
        server.close()
        await server.wait_closed()
        return out

    ok, missing, post = asyncio.run(go())
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and b"sparc_service_state{" in ok
    assert missing.startswith(b"HTTP/1.1 404 ") and post.startswith(b"HTTP/1.1 405 ")


def test_unit_views_feed_the_state_series() -> None:
    m = _machine("x", State.STOPPED, 0.0)
    m.on_unit(UnitView("active", "running", invocation_id="a"), 1.0)
    metrics = Metrics(lambda: iter([("s", m)]))
    assert 'sparc_service_state{service="x",stack="s",state="HEALTHY"} 1.0' in _samples(
        metrics.exposition().decode()
    )


def test_agent_refuses_to_start_with_a_bad_metrics_config(tmp_path: Path) -> None:
    config = tmp_path / "cfg" / "sparc-agent" / "agent.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("metrics: {port: 99999}\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_RUNTIME_DIR": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "sparc_agent", "run", "--no-apply", "--log-format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{config}: metrics.port: expected a port 1-65535, not 99999" in proc.stderr


def test_a_webrtc_verdict_sets_first_frame_seconds_through_the_machine() -> None:
    from sparc_agent.agent.runner import apart_view
    from sparc_agent.probes.base import ProbeOutcome, ProbeResult

    m = _machine("unity", State.STOPPED, 0.0)
    m.on_unit(UnitView("active", "running", invocation_id="a"), 1.0)
    metrics = Metrics(lambda: iter([("s", m)]))
    ok = ProbeResult(ProbeOutcome.OK, 3.4, "h264 640x360", phase="first_frame", timings={"first_frame": 1.5})
    m.on_probe(apart_view(ok, "webrtc", "unity"), 2.0)
    failed = ProbeResult(ProbeOutcome.FAILED, 9.0, "no relay", phase="ice_gather", timings={"signaling": 0.1})
    m.on_probe(apart_view(failed, "webrtc", "unity"), 3.0)
    for event in m.drain():
        metrics.on_event("s", event)
    samples = _samples(metrics.exposition().decode())
    assert 'sparc_media_first_frame_seconds{service="unity",stack="s"} 1.5' in samples
    assert (
        'sparc_probe_failures_total{kind="webrtc",outcome="failed",phase="ice_gather",service="unity",stack="s"}'
        " 1.0" in samples
    )


def test_a_forgotten_stack_takes_its_series_with_it() -> None:
    """`down --purge` while the agent runs: the agent tells its listeners, no series of the stack stays."""
    machines: list[tuple[str, ServiceMachine]] = []
    metrics = Metrics(lambda: iter(list(machines)))
    for stack in ("gone", "kept"):
        metrics.on_event(stack, {"event": "probe", "service": "web", "kind": "http", "outcome": "failed"})
        metrics.on_event(stack, {"event": "restart", "service": "web", "by": "systemd", "reason": "x"})
    metrics.on_event("gone", {"event": "forgotten", "stack": "gone"})
    samples = _samples(metrics.exposition().decode())
    assert not [s for s in samples if 'stack="gone"' in s]
    kept = [s for s in samples if 'stack="kept"' in s]
    failures = 'sparc_probe_failures_total{kind="http",outcome="failed",phase="probe",service="web",'
    assert failures + 'stack="kept"} 1.0' in kept
    assert any(s.startswith("sparc_restarts_total{") for s in kept)
    # a stack of that name applied again starts from 0, every restart series present again
    metrics.on_event("gone", {"event": "probe", "service": "web", "kind": "http", "outcome": "ok"})
    again = _samples(metrics.exposition().decode())
    assert 'sparc_restarts_total{by="agent",reason="crash",service="web",stack="gone"} 0.0' in again


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, _event: str, reason: str = "", **_: object) -> None:
        self.lines.append(("info", reason))

    warning = info

    def error(self, _event: str, reason: str = "", **_: object) -> None:
        self.lines.append(("error", reason))


def _scrape(port: int) -> bytes | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            return bytes(answer.read())
    except OSError:
        return None


def test_a_reload_moves_metrics_keeps_counters_and_a_bad_file_keeps_what_serves(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from support.testhost import free_port

    from sparc_agent.agent.metrics import MetricsEndpoint

    config = tmp_path / "sparc-agent" / "agent.yaml"
    config.parent.mkdir()
    log, first, second = _Log(), free_port(), free_port()
    agent: Any = SimpleNamespace(
        paths=SimpleNamespace(config_home=tmp_path), log=log, listeners=[], runners={}
    )
    endpoint = MetricsEndpoint(agent)

    async def go() -> None:
        config.write_text(f"metrics: {{port: {first}}}\n")
        await endpoint.start()
        agent.listeners[0](
            "s", {"event": "restart", "service": "x", "by": "systemd", "reason": "unit failed"}
        )
        assert b"sparc_restarts_total" in (await asyncio.to_thread(_scrape, first) or b"")

        config.write_text(f"metrics: {{port: {second}}}\n")
        await endpoint.reload()
        assert await asyncio.to_thread(_scrape, first) is None
        moved = await asyncio.to_thread(_scrape, second) or b""
        assert b'sparc_restarts_total{by="systemd",reason="crash",service="x",stack="s"} 1.0' in moved
        assert len(agent.listeners) == 1  # one registry: the counters go on

        config.write_text("metrics: {port: 99999}\n")
        await endpoint.reload()
        assert await asyncio.to_thread(_scrape, second) is not None
        assert log.lines[-1][0] == "error" and f"still serving 127.0.0.1:{second}" in log.lines[-1][1]
        assert "metrics.port: expected a port 1-65535, not 99999" in log.lines[-1][1]

        with socket.socket() as taken:  # a port in use: back to the old one, said why
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            config.write_text(f"metrics: {{port: {taken.getsockname()[1]}}}\n")
            await endpoint.reload()
        assert await asyncio.to_thread(_scrape, second) is not None
        assert "cannot listen on 127.0.0.1" in log.lines[-1][1] and "still serving" in log.lines[-1][1]

        config.write_text("")
        await endpoint.reload()
        assert await asyncio.to_thread(_scrape, second) is None and log.lines[-1][0] == "info"
        endpoint.close()

    asyncio.run(go())
