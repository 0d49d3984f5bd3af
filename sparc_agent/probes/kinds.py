"""The one table of probe kinds: what the profile accepts under `health:`, and how each is run.

A row names the kind (its key under `health:`), the transport its `port` is reached by (what the
profile checks is published, what exporters map), the spec (a frozen dataclass whose annotated
fields the profile validates), and the probe function. Adding a kind is one module (spec + probe)
and one row here; nothing else in sparc_agent names a kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from sparc_agent.probes import exec as exec_probe
from sparc_agent.probes import grpc, http, stun, tcp, webrtc, websocket
from sparc_agent.probes.base import ProbeResult, Target

# tcp/udp: `port` is a host port reached over that protocol; exec: runs inside the container
Transport = Literal["tcp", "udp", "exec"]


@dataclass(frozen=True)
class Kind:
    name: str
    transport: Transport
    spec: type[Any]
    probe: Callable[[Any, Target], Awaitable[ProbeResult]]
    # runs apart from the service's own probe, on the spec's own interval and timeout, and feeds its
    # verdicts into the same supervisor (webrtc: rare and slow); `health:` has one kind that is not
    apart: bool = False


KINDS: Final[dict[str, Kind]] = {
    k.name: k
    for k in (
        Kind("tcp", "tcp", tcp.TcpSpec, tcp.probe),
        Kind("http", "tcp", http.HttpSpec, http.probe),
        Kind("websocket", "tcp", websocket.WebSocketSpec, websocket.probe),
        Kind("grpc", "tcp", grpc.GrpcSpec, grpc.probe),
        Kind("stun", "udp", stun.StunSpec, stun.probe),
        Kind("exec", "exec", exec_probe.ExecSpec, exec_probe.probe),
        Kind("webrtc", "tcp", webrtc.WebRtcSpec, webrtc.probe, apart=True),
    )
}

# fields of a spec that the profile takes from `health:` itself, not from the kind's block (but for
# kinds that run apart: they have their own)
COMMON_FIELDS: Final = ("timeout_s",)


def kind_of(spec: object) -> Kind | None:
    return next((k for k in KINDS.values() if type(spec) is k.spec), None)


def spec_from_fields(kind: str, fields: Mapping[str, Any]) -> Any:
    """A kind's spec from plain values (a profile block, or a plan read back from JSON)."""
    spec = KINDS[kind].spec
    names = {f.name for f in dataclasses.fields(spec)}
    # JSON has no tuples; every sequence field of a spec is a tuple
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k in names}
    return spec(**values)
