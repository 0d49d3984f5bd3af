"""The supervision plan of a generation: what the agent supervises and how, recorded by apply in the
generation's meta.json so the agent never needs the profile model (pydantic) to read it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ServicePlan:
    name: str
    unit: str
    container: str
    # {"kind": "http", "port": .., "timeout_s": .., "pod": P when run inside pod P}: apply.fastpath
    probe: dict[str, Any] | None = None
    interval: float = 5.0
    timeout: float = 2.0
    retries: int = 3
    start_period: float = 0.0
    policy: str = "on-failure"  # no, on-failure, always
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    multiplier: float = 2.0
    max_restarts: int = 5
    window: float = 600.0
    stop_grace: float = 0.0  # a hung service's container gets SIGKILL when its stop takes longer
    depends_on: dict[str, str] = field(default_factory=dict)  # service -> started | healthy | completed
    oneshot: bool = False  # runs once per generation (apply runs it): policy "no", no probe
    gpu: bool = False  # has `gpus`: its GPU memory is measured (metrics)
    gpu_memory_budget: int | None = None  # resources.gpu_memory, bytes
    # probes that run apart and feed verdicts in (source = kind): [{"kind": "webrtc", ...spec fields}]
    apart: list[dict[str, Any]] = field(default_factory=list)

    def backoff(self, attempt: int) -> float:
        """Delay before restart `attempt` (1-based) of an episode: initial * multiplier^(n-1), capped."""
        return float(min(self.backoff_initial * self.multiplier ** max(0, attempt - 1), self.backoff_max))


@dataclass(frozen=True)
class StackPlan:
    stack: str
    generation: int
    services: tuple[ServicePlan, ...]
    # secret name -> {"file": PATH} or {"env": NAME}: where a probe reads one (webrtc's TURN secret)
    secret_sources: dict[str, dict[str, str]] = field(default_factory=dict)
    # names.port_key -> who publishes that host port: named when the pod cannot bind it (apply.portclash)
    published: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "generation": self.generation,
            "services": [asdict(s) for s in self.services],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackPlan:
        return cls(data["stack"], int(data["generation"]), tuple(ServicePlan(**s) for s in data["services"]))

    def dependents(self, name: str) -> list[str]:
        """Services that depend on `name` being healthy (a one-shot is never run again for that)."""
        return [s.name for s in self.services if s.depends_on.get(name) == "healthy" and not s.oneshot]
