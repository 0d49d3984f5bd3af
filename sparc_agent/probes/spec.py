"""What to probe: protocol-neutral, frozen specs (the profile's `health:` maps onto these)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TcpSpec:
    port: int
    timeout_s: float = 2.0


@dataclass(frozen=True)
class HttpSpec:
    port: int
    path: str = "/"
    status: tuple[int, int] = (200, 399)
    timeout_s: float = 2.0


@dataclass(frozen=True)
class WebSocketSpec:
    port: int
    path: str = "/"
    timeout_s: float = 2.0


@dataclass(frozen=True)
class GrpcSpec:
    port: int
    service: str = ""
    timeout_s: float = 2.0


@dataclass(frozen=True)
class StunSpec:
    port: int
    timeout_s: float = 2.0


@dataclass(frozen=True)
class ExecSpec:
    command: tuple[str, ...]
    timeout_s: float = 2.0


ProbeSpec = TcpSpec | HttpSpec | WebSocketSpec | GrpcSpec | StunSpec | ExecSpec
