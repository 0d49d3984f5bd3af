"""The agent's Prometheus metrics (prometheus_client), served on /metrics by the agent's own event loop.

Off unless `$XDG_CONFIG_HOME/sparc-agent/agent.yaml` says

    metrics:
      port: 9464
      address: 127.0.0.1     # the default; another address only when written here

Counters and histograms are fed by the supervisor's events (Agent.listeners): every probe result,
every restart. What describes the present (each service's state, since when, its GPU memory) is read
from the machines when Prometheus scrapes, so a scrape never shows a stale state. Names follow
node_exporter/systemd_exporter: one series per state with value 1 for the current one, `_total`
counters, `_seconds` and `_bytes` units, `_timestamp_seconds` for wall-clock times.

The server is asyncio in the agent's loop (no thread): one short GET per scrape, 8 KiB of request at
most, 5 s to send it. prometheus_client is imported only when metrics are on (~4 MB of the agent's RSS).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import platform
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sparc_agent import __version__
from sparc_agent.agent.supervisor import Event, State
from sparc_agent.errors import EnvironmentProblem, InvalidInput

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from sparc_agent.agent.runner import Agent
    from sparc_agent.agent.supervisor import ServiceMachine

CONFIG_NAME: Final = "agent.yaml"
DEFAULT_ADDRESS: Final = "127.0.0.1"
PROBE_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REQUEST_LIMIT: Final = 8192
REQUEST_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True)
class MetricsConfig:
    address: str
    port: int


def read_config(path: Path) -> MetricsConfig | None:
    """The `metrics:` section of agent.yaml; None when the file or the section is absent (metrics off)."""
    import yaml

    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not YAML: {exc}") from None
    if doc is None:
        return None
    if not isinstance(doc, dict) or set(doc) - {"metrics"}:
        raise InvalidInput(f"{path}: expected a mapping with the key `metrics` only")
    section = doc.get("metrics")
    if section is None:
        return None
    if not isinstance(section, dict) or set(section) - {"port", "address"} or "port" not in section:
        raise InvalidInput(f"{path}: metrics: expected {{port: N, address: IP}} (address optional)")
    port, address = section["port"], section.get("address", DEFAULT_ADDRESS)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidInput(f"{path}: metrics.port: expected a port 1-65535, not {port!r}")
    try:
        ipaddress.ip_address(str(address))
    except ValueError:
        raise InvalidInput(f"{path}: metrics.address: expected an IP address, not {address!r}") from None
    return MetricsConfig(str(address), port)


RESTART_REASONS: Final = ("crash", "unhealthy", "dependency", "manager_restart", "retry", "other")


def restart_reason(event: Event) -> str:
    """A restart's reason as a bounded label value (the free text goes to the journal)."""
    reason = str(event.get("reason", ""))
    if event.get("by") == "systemd" or reason.startswith("unit "):
        return "crash"
    for prefix, label in (
        ("unhealthy", "unhealthy"),
        ("dependency", "dependency"),
        ("user manager", "manager_restart"),
        ("restart failed", "retry"),
    ):
        if reason.startswith(prefix):
            return label
    return "other"


class Metrics:
    """The registry, fed by supervisor events; `machines` gives the present at scrape time."""

    def __init__(
        self,
        machines: Callable[[], Iterator[tuple[str, ServiceMachine]]],
        gpu_memory: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self._machines = machines
        self._gpu_memory = gpu_memory
        self._seen: set[tuple[str, str]] = set()
        self._series: dict[str, set[tuple[Any, tuple[str, ...]]]] = {}  # stack -> (metric, labels) made
        labels = ["stack", "service"]
        self.probe_duration = Histogram(
            "sparc_probe_duration_seconds",
            "How long each health probe took, by kind (failed probes too)",
            [*labels, "kind"],
            buckets=PROBE_BUCKETS,
            registry=self.registry,
        )
        self.probe_failures = Counter(
            "sparc_probe_failures",
            "Probes that did not pass, by the phase they reached (webrtc) and outcome (failed: the target;"
            " error: ours)",
            [*labels, "kind", "phase", "outcome"],
            registry=self.registry,
        )
        self.restarts = Counter(
            "sparc_restarts",
            "Restarts of a service: by the agent or by systemd's Restart=, and why",
            [*labels, "by", "reason"],
            registry=self.registry,
        )
        self.first_frame = Gauge(
            "sparc_media_first_frame_seconds",
            "The last passing webrtc probe's time to the first decoded video frame",
            labels,
            registry=self.registry,
        )
        build = Gauge(
            "sparc_agent_build_info",
            "The agent's version and Python",
            ["version", "python"],
            registry=self.registry,
        )
        build.labels(__version__, platform.python_version()).set(1)
        self.registry.register(_PresentCollector(self))

    def _child(self, metric: Any, *labels: str) -> Any:
        """metric.labels(*labels), remembered under its stack (labels[0]) so that `forget` finds it."""
        self._series.setdefault(labels[0], set()).add((metric, labels))
        return metric.labels(*labels)

    def forget(self, stack: str) -> None:
        """The stack is gone (`down --purge` while the agent ran): so are its series."""
        for metric, labels in self._series.pop(stack, set()):
            metric.remove(*labels)
        self._seen = {seen for seen in self._seen if seen[0] != stack}

    def on_event(self, stack: str, event: Event) -> None:
        """An Agent listener: probe results and restarts become samples."""
        if event["event"] == "forgotten":
            self.forget(stack)
            return
        service = str(event.get("service", ""))
        if (stack, service) not in self._seen:
            # every restart series from 0, so that the first restart shows in increase() and rate()
            self._seen.add((stack, service))
            for by in ("agent", "systemd"):
                for reason in RESTART_REASONS:
                    self._child(self.restarts, stack, service, by, reason)
        if event["event"] == "probe":
            kind = str(event.get("kind", ""))
            self._child(self.probe_duration, stack, service, kind).observe(float(event.get("latency_s", 0.0)))
            outcome = str(event.get("outcome", ""))
            if outcome != "ok":
                phase = str(event.get("phase") or "probe")
                self._child(self.probe_failures, stack, service, kind, phase, outcome).inc()
            elif event.get("first_frame_s") is not None:  # a webrtc probe that got a frame
                self._child(self.first_frame, stack, service).set(float(event["first_frame_s"]))
        elif event["event"] == "restart":
            by = str(event.get("by", "agent"))
            self._child(self.restarts, stack, service, by, restart_reason(event)).inc()

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class _PresentCollector:
    """Service state, last transition, GPU memory: read from the machines at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        labels = ["stack", "service"]
        state = GaugeMetricFamily(
            "sparc_service_state",
            "The supervisor's state of each service: 1 for the current one",
            labels=[*labels, "state"],
        )
        since = GaugeMetricFamily(
            "sparc_service_last_transition_timestamp_seconds",
            "When the service entered its current state (Unix time)",
            labels=labels,
        )
        gpu = GaugeMetricFamily(
            "sparc_service_gpu_memory_bytes",
            "GPU memory held by the service's processes (NVML, by cgroup), GPU services only",
            labels=labels,
        )
        budget = GaugeMetricFamily(
            "sparc_service_gpu_memory_budget_bytes", "The service's resources.gpu_memory", labels=labels
        )
        lost = GaugeMetricFamily(
            "sparc_gpu_memory_unattributed_bytes",
            "GPU memory of processes whose cgroup names no unit (not counted in any service's)",
        )
        now, wall = time.monotonic(), time.time()
        machines = list(self.metrics._machines())
        by_unit = self._gpu(machines)
        for stack, m in machines:
            name = m.plan.name
            for s in State:
                state.add_metric([stack, name, str(s)], 1.0 if m.state is s else 0.0)
            since.add_metric([stack, name], wall - (now - m.since))
            if m.plan.gpu and by_unit is not None:
                gpu.add_metric([stack, name], float(by_unit.get(m.plan.unit, 0)))
            if m.plan.gpu_memory_budget is not None:
                budget.add_metric([stack, name], float(m.plan.gpu_memory_budget))
        if by_unit is not None:
            lost.add_metric([], float(by_unit.get("", 0)))  # host.gpu.UNATTRIBUTED
        yield from (state, since, gpu, budget, lost)

    def _gpu(self, machines: list[tuple[str, ServiceMachine]]) -> Mapping[str, int] | None:
        if self.metrics._gpu_memory is None or not any(m.plan.gpu for _, m in machines):
            return None
        return self.metrics._gpu_memory()


class GpuSampler:
    """NVML opened once, at the first scrape that needs it; unavailable is remembered and said once."""

    def __init__(self, warn: Callable[[str], None]) -> None:
        self._nvml: Any = None
        self._failed = False
        self._warn = warn

    def __call__(self) -> Mapping[str, int]:
        from sparc_agent.host.gpu import GpuUnavailable, memory_by_unit, open_nvml

        if self._failed:
            return {}
        try:
            if self._nvml is None:
                self._nvml = open_nvml()
            return memory_by_unit(self._nvml.processes())
        except GpuUnavailable as exc:
            self._failed = True
            self._warn(str(exc))
            return {}
        except Exception as exc:  # an NVML error mid-query: this scrape has no GPU numbers
            self._warn(f"{type(exc).__name__}: {exc}")
            return {}


async def serve(metrics: Metrics, config: MetricsConfig) -> asyncio.Server:
    """GET /metrics on config.address:config.port, in this event loop."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path, *_ = [*head.split(b"\r\n", 1)[0].split(b" "), b"", b""]
            status, body = _answer(metrics, method, path)
            content_type = "text/plain; version=0.0.4; charset=utf-8"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + (body if method != b"HEAD" else b"")
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, config.address, config.port, limit=REQUEST_LIMIT)


def _answer(metrics: Metrics, method: bytes, path: bytes) -> tuple[str, bytes]:
    if method not in (b"GET", b"HEAD"):
        return "405 Method Not Allowed", b"GET /metrics\n"
    if path.split(b"?", 1)[0] != b"/metrics":
        return "404 Not Found", b"GET /metrics\n"
    return "200 OK", metrics.exposition()


class MetricsEndpoint:
    """/metrics as agent.yaml says now. Read at start, where a bad file stops the agent (exit 2, or 3
    for a port in use), and again on reload (SIGHUP), where a bad file or a port in use leaves what
    serves as it was and says so in the journal: a typo must not end supervision. The counters live
    on across reloads (one registry per agent)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.path = agent.paths.config_home / "sparc-agent" / CONFIG_NAME
        self.config: MetricsConfig | None = None
        self.server: asyncio.Server | None = None
        self._metrics: Metrics | None = None

    async def start(self) -> None:
        config = read_config(self.path)
        if config is not None:
            await self._serve(config)

    async def reload(self) -> None:
        try:
            config = read_config(self.path)
        except InvalidInput as exc:
            self._refused(exc)
            return
        if config == self.config:
            return
        old, self.config = self.config, None
        self.close()  # first: the new address may overlap the old one
        if config is None:
            self.agent.log.info("metrics", reason="off (agent.yaml has no metrics section)")
            return
        try:
            await self._serve(config)
        except EnvironmentProblem as exc:
            if old is not None:  # back to what served
                with contextlib.suppress(EnvironmentProblem):
                    await self._serve(old)
            self._refused(exc)

    def _refused(self, exc: Exception) -> None:
        now = f"still serving {self.config.address}:{self.config.port}" if self.config else "still off"
        self.agent.log.error("metrics", reason=f"agent.yaml not taken on reload, {now}: {exc}")

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    async def _serve(self, config: MetricsConfig) -> None:
        try:
            self.server = await serve(self._registry(), config)
        except OSError as exc:
            raise EnvironmentProblem(
                f"metrics: cannot listen on {config.address}:{config.port}: {exc.strerror}"
                " (agent.yaml metrics.port)"
            ) from None
        self.config = config
        self.agent.log.info("metrics", reason="serving /metrics", address=config.address, port=config.port)

    def _registry(self) -> Metrics:
        if self._metrics is None:
            agent = self.agent

            def machines() -> Iterator[tuple[str, ServiceMachine]]:
                for stack, runner in list(agent.runners.items()):
                    for m in list(runner.machines.values()):
                        yield stack, m

            sampler = GpuSampler(
                lambda why: agent.log.warning("metrics", reason=f"GPU memory unknown: {why}")
            )
            self._metrics = Metrics(machines, sampler)
            agent.listeners.append(self._metrics.on_event)
        return self._metrics
