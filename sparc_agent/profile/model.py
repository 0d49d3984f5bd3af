"""The profile contract (shared/profile-spec.md) as frozen pydantic models.

Field-level rules live here as annotated types; rules that relate fields to
each other (secrets declared, probe ports published, dependency cycles, names that collide) live
in `rules.py`, so that each error can name the exact key it is about.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_type_hints

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator

from sparc_agent.probes.kinds import COMMON_FIELDS, KINDS, Kind, spec_from_fields
from sparc_agent.profile import names
from sparc_agent.profile.scalars import ItemError, parse_duration
from sparc_agent.profile.scalars import argv as _argv
from sparc_agent.profile.scalars import describe as _describe
from sparc_agent.profile.scalars import no_control as _no_control
from sparc_agent.profile.scalars import text as _text

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# distribution/reference grammar, simplified: [domain[:port]/]path[:tag][@digest]
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?)"
)
IMAGE_REF = re.compile(
    rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::(?P<tag>[\w][\w.-]{{0,127}}))?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)

_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?", re.IGNORECASE)
_MEM_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False, hide_input_in_errors=True)


# ---------------------------------------------------------------- scalar types


def _slug(max_len: int, what: str) -> Any:
    def check(value: Any) -> str:
        text = _text(value)
        problem = names.name_problem(text, what, max_len)
        if problem:
            raise ValueError(problem)
        return text

    return BeforeValidator(check)


StackName = Annotated[str, _slug(names.MAX_STACK, "stack name")]
ServiceName = Annotated[str, _slug(names.MAX_SERVICE, "service name")]
ObjectName = Annotated[str, _slug(names.MAX_OBJECT, "name")]


def _env_name(value: Any) -> str:
    text = _text(value)
    if not ENV_NAME.fullmatch(text):
        raise ValueError(f"invalid variable name {text!r} (allowed: [A-Za-z_][A-Za-z0-9_]*)")
    return text


EnvName = Annotated[str, BeforeValidator(_env_name)]
Text = Annotated[str, BeforeValidator(_text)]


Duration = Annotated[float, BeforeValidator(parse_duration)]


def parse_memory(value: Any) -> int:
    allowed = "(allowed: bytes, or a number with b, k, m, g or t, e.g. 512m, 16g)"
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _MEMORY.fullmatch(value.strip()) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"invalid memory size {value!r} {allowed}")
    size = int(float(m.group(1)) * _MEM_UNITS[m.group(2).lower()])
    if size <= 0:
        raise ValueError(f"memory size must be positive {allowed}")
    return size


Memory = Annotated[int, BeforeValidator(parse_memory)]


def _port_number(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"invalid port {text!r} (allowed: 1-65535)")
    return int(text)


# ---------------------------------------------------------------- ports


@dataclass(frozen=True)
class PortSpec:
    """`[ip:]host:container[/tcp|/udp]`, either side a single port or an equal-length range."""

    host_ip: str | None  # None: use pod.bind
    host: tuple[int, int]
    container: tuple[int, int]
    protocol: Literal["tcp", "udp"]

    @staticmethod
    def _range(text: str) -> tuple[int, int]:
        lo, dash, hi = text.partition("-")
        first = _port_number(lo)
        last = _port_number(hi) if dash else first
        if last < first:
            raise ValueError(f"port range {text!r} runs backwards")
        return first, last

    @classmethod
    def parse(cls, value: Any) -> PortSpec:
        allowed = '(allowed: "[ip:]host:container[/tcp|/udp]", ranges like "49152-49200:49152-49200/udp")'
        if not isinstance(value, str):
            raise ValueError(f"a port must be a quoted string, got {_describe(value)} {allowed}")
        text = _no_control(value.strip())
        body, slash, proto = text.partition("/")
        protocol = proto if slash else "tcp"
        if protocol not in ("tcp", "udp"):
            raise ValueError(f"invalid protocol {proto!r} (allowed: tcp, udp)")
        host_ip: str | None = None
        if body.startswith("["):  # [::1]:8000:8000
            end = body.find("]:")
            if end < 0:
                raise ValueError(f"invalid port {value!r} {allowed}")
            host_ip, body = body[1:end], body[end + 2 :]
        parts = body.split(":")
        if host_ip is None and len(parts) == 3:
            host_ip, parts = parts[0], parts[1:]
        if len(parts) != 2:
            raise ValueError(f"invalid port {value!r} {allowed}")
        if host_ip is not None:
            try:
                host_ip = str(ipaddress.ip_address(host_ip))
            except ValueError:
                raise ValueError(f"invalid host address {host_ip!r} {allowed}") from None
        host, container = cls._range(parts[0]), cls._range(parts[1])
        if host[1] - host[0] != container[1] - container[0]:
            raise ValueError(
                f"port ranges differ in length: host {parts[0]} has {host[1] - host[0] + 1} ports,"
                f" container {parts[1]} has {container[1] - container[0] + 1} (allowed: equal lengths)"
            )
        return cls(host_ip, host, container, protocol)  # type: ignore[arg-type]

    def __str__(self) -> str:
        def span(r: tuple[int, int]) -> str:
            return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"

        ip = (
            ""
            if self.host_ip is None
            else (f"[{self.host_ip}]:" if ":" in self.host_ip else f"{self.host_ip}:")
        )
        return f"{ip}{span(self.host)}:{span(self.container)}/{self.protocol}"


Port = Annotated[PortSpec, BeforeValidator(lambda v: v if isinstance(v, PortSpec) else PortSpec.parse(v))]


def _ip(value: Any) -> str:
    try:
        return str(ipaddress.ip_address(_text(value)))
    except ValueError:
        raise ValueError(f"invalid IP address {value!r} (allowed: e.g. 127.0.0.1, 0.0.0.0, ::1)") from None


class Pod(Frozen):
    bind: Annotated[str, BeforeValidator(_ip)] = "127.0.0.1"
    ports: tuple[Port, ...] = ()


# ---------------------------------------------------------------- volumes and secrets


def _host_path(value: Any) -> str:
    """Absolute or ~-relative, without '..'; normalized."""
    text = _text(value)
    if not (text.startswith("/") or text == "~" or text.startswith("~/")):
        raise ValueError(f"host path {text!r} must be absolute or start with ~/")
    if ".." in text.split("/"):
        raise ValueError(f"host path {text!r} must not contain '..'")
    if any(c.isspace() or c in "\"'\\" for c in text):
        # podman's -v and quadlet's Volume= have no quoting for these
        raise ValueError(f"host path {text!r} must not contain blanks, quotes or backslashes")
    return (
        posixpath.normpath(text)
        if text.startswith("/")
        else "~" + posixpath.normpath(text[1:] or "/").rstrip("/")
    )


HostPath = Annotated[str, BeforeValidator(_host_path)]


class VolumeDecl(Frozen):
    driver: Text | None = None
    options: dict[Annotated[str, BeforeValidator(_text)], Text] = Field(default_factory=dict)


class SecretDecl(Frozen):
    file: HostPath | None = None
    env: EnvName | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretDecl:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one source (allowed: {file: PATH} or {env: VAR})")
        return self


@dataclass(frozen=True)
class Mount:
    source: str  # declared volume name, or a host path
    target: str
    options: tuple[str, ...]

    @property
    def is_named_volume(self) -> bool:
        return not self.source.startswith(("/", "~"))

    @classmethod
    def parse(cls, value: Any) -> Mount:
        allowed = "(allowed: SRC:DST[:ro|rw|z|Z], SRC a declared volume or an absolute host path)"
        text = _text(value)
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"invalid volume {text!r} {allowed}")
        src, dst = parts[0], parts[1]
        if not src.startswith(("/", "~")):
            if not names.SLUG.fullmatch(src):
                raise ValueError(f"invalid volume name {src!r} {allowed}")
        else:
            src = _host_path(src)
        if not dst.startswith("/") or ".." in dst.split("/"):
            raise ValueError(f"container path {dst!r} must be absolute, without '..' {allowed}")
        options = tuple(o for o in parts[2].split(",")) if len(parts) == 3 else ()
        bad = [o for o in options if o not in ("ro", "rw", "z", "Z")]
        if bad or {"ro", "rw"} <= set(options) or {"z", "Z"} <= set(options):
            raise ValueError(f"invalid volume options {parts[2]!r} {allowed}")
        return cls(src, posixpath.normpath(dst), options)

    def __str__(self) -> str:
        return ":".join([self.source, self.target, *([",".join(self.options)] if self.options else [])])


MountSpec = Annotated[Mount, BeforeValidator(lambda v: v if isinstance(v, Mount) else Mount.parse(v))]


# ---------------------------------------------------------------- probes


Argv = Annotated[tuple[str, ...], BeforeValidator(_argv)]


def _block_model(kind: Kind) -> type[Frozen]:
    """The kind's block under `health:`: its spec's fields but the ones `health:` holds itself."""
    hints = get_type_hints(kind.spec, include_extras=True)
    fields: dict[str, Any] = {
        f.name: (hints[f.name], ... if f.default is dataclasses.MISSING else f.default)
        for f in dataclasses.fields(kind.spec)
        if kind.apart or f.name not in COMMON_FIELDS
    }
    return create_model(f"{kind.spec.__name__}Block", __base__=Frozen, **fields)


PROBE_KINDS = tuple(k for k, kind in KINDS.items() if not kind.apart)
APART_KINDS = tuple(k for k, kind in KINDS.items() if kind.apart)
if TYPE_CHECKING:
    _ProbeBlocks = Frozen
else:  # one optional field per kind, from the probes' table
    _ProbeBlocks = create_model(
        "_ProbeBlocks", __base__=Frozen, **{n: (_block_model(k) | None, None) for n, k in KINDS.items()}
    )


class Health(_ProbeBlocks):
    interval: Duration = 5.0
    timeout: Duration = 2.0
    retries: Annotated[int, Field(ge=1, le=1000, strict=True)] = 3
    start_period: Duration = 0.0

    @model_validator(mode="after")
    def _one_probe(self) -> Health:
        given = [k for k in PROBE_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one probe, got {len(given)}{': ' + ', '.join(given) if given else ''}"
                f" (allowed: {', '.join(PROBE_KINDS)}; {', '.join(APART_KINDS)} may come in addition)"
            )
        if self.interval <= 0 or self.timeout <= 0:
            raise ValueError("interval and timeout must be longer than 0s")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in PROBE_KINDS if getattr(self, k) is not None)

    @property
    def probe(self) -> Frozen:
        value: Frozen = getattr(self, self.kind)
        return value

    @property
    def spec(self) -> Any:
        """The probe as the probes run it (sparc_agent.probes' spec of this kind)."""
        return spec_from_fields(self.kind, {**dict(self.probe), "timeout_s": self.timeout})

    @property
    def apart(self) -> dict[str, Frozen]:
        """The probes that run apart (webrtc), by kind: each has its own interval and timeout."""
        return {k: getattr(self, k) for k in APART_KINDS if getattr(self, k) is not None}


# ---------------------------------------------------------------- restart policy, resources


def _policy(value: Any) -> str:
    if value is False:  # YAML 1.1 reads `policy: no` as false: accept what was meant
        return "no"
    if value in ("no", "on-failure", "always"):
        return str(value)
    raise ValueError(f"invalid restart policy {value!r} (allowed: no, on-failure, always)")


class Backoff(Frozen):
    initial: Duration = 1.0
    max: Duration = 300.0
    multiplier: Annotated[float, Field(ge=1.0, le=10.0)] = 2.0

    @model_validator(mode="after")
    def _ordered(self) -> Backoff:
        if self.initial > self.max:
            raise ValueError("backoff.initial is longer than backoff.max")
        return self


class RestartPolicy(Frozen):
    policy: Annotated[Literal["no", "on-failure", "always"], BeforeValidator(_policy)] = "on-failure"
    backoff: Backoff = Backoff()
    max_restarts: Annotated[int, Field(ge=0, le=10_000, strict=True)] = 5
    window: Duration = 600.0
    # a service that failed its probes is hung: SIGKILL its container if it has not stopped after this long
    stop_grace: Duration = 0.0


class Resources(Frozen):
    cpus: Annotated[float, Field(gt=0, le=1024)] | None = None
    memory: Memory | None = None
    pids: Annotated[int, Field(gt=0, strict=True)] | None = None
    gpu_memory: Memory | None = (
        None  # the service's share of the GPU's memory (checked, not enforced by CUDA)
    )


def _gpus(value: Any) -> str | int | tuple[str, ...]:
    allowed = "(allowed: all, a count such as 1, or a list of device ids)"
    if value == "all":
        return "all"
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"GPU count must be at least 1 {allowed}")
        return value
    if isinstance(value, list) and value:
        for i, item in enumerate(value):
            valid = isinstance(item, int | str) and not isinstance(item, bool)
            if not valid or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]*", str(item)):
                raise ItemError(i, f"invalid GPU id {item!r} {allowed}")
        return tuple(str(v) for v in value)
    raise ValueError(f"invalid gpus {value!r} {allowed}")


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return _no_control(value)
    raise ValueError(f"expected a string, number or boolean, got {_describe(value)}")


def _depends_on(value: Any) -> Any:
    if isinstance(value, list):  # compose's short form: every dependency just `started`
        for i, name in enumerate(value):
            if not isinstance(name, str):
                raise ItemError(i, f"expected a service name, got {_describe(name)}")
        return {name: "started" for name in value}
    return value


def _image(value: Any) -> str:
    text = _text(value)
    if not IMAGE_REF.fullmatch(text):
        raise ValueError(f"invalid image reference {text!r} (allowed: [registry/]name[:tag][@sha256:digest])")
    return text


class Service(Frozen):
    image: Annotated[str, BeforeValidator(_image)]
    command: Argv | None = None
    env: dict[EnvName, Annotated[str, BeforeValidator(_env_value)]] = Field(default_factory=dict)
    secrets: dict[EnvName, ObjectName] = Field(default_factory=dict)
    volumes: tuple[MountSpec, ...] = ()
    gpus: Annotated[str | int | tuple[str, ...], BeforeValidator(_gpus)] | None = None
    resources: Resources | None = None
    depends_on: Annotated[
        dict[ServiceName, Literal["started", "healthy", "completed"]], BeforeValidator(_depends_on)
    ] = Field(default_factory=dict)
    health: Health | None = None
    restart: RestartPolicy = RestartPolicy()
    # runs to completion once per generation (compose's "loader"): dependents wait for `completed`
    oneshot: Annotated[bool, Field(strict=True)] = False


def _no_null_decl(value: Any) -> Any:
    # `riva-models:` with nothing after it means "defaults", like compose
    if isinstance(value, dict):
        return {k: ({} if v is None else v) for k, v in value.items()}
    return value


def _api_version(value: Any) -> str:
    if value != API_VERSION:
        raise ValueError(f"unsupported apiVersion {value!r} (allowed: {API_VERSION})")
    return API_VERSION


def _gpu_total(value: Any) -> int | str:
    return "detect" if value == "detect" else parse_memory(value)


class GpuDecl(Frozen):
    """The GPU the stack's services share (one GPU, as on PubApps)."""

    memory: Annotated[int | Literal["detect"], BeforeValidator(_gpu_total)] = "detect"
    enforce: bool = False  # apply fails (and rolls back) when a service uses more than its gpu_memory


class Profile(Frozen):
    api_version: Annotated[str, BeforeValidator(_api_version)] = Field(alias="apiVersion")
    name: StackName
    pod: Pod = Pod()
    volumes: Annotated[dict[ObjectName, VolumeDecl], BeforeValidator(_no_null_decl)] = Field(
        default_factory=dict
    )
    secrets: dict[ObjectName, SecretDecl] = Field(default_factory=dict)
    services: Annotated[dict[ServiceName, Service], Field(min_length=1)]
    gpu: GpuDecl = GpuDecl()


API_VERSION = "sparc-agent/v1"
