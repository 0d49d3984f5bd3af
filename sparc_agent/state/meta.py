"""A generation's metadata (meta.json): typed, versioned, read and written only here.

Schema history (`schema` in the file; a file without it is schema 0):
    0  (sparc-agent before the state/ package) untyped: status, input_key, plan{services,
       secret_sources}, digest, sources, target, secrets, number, created, files, [failed, reason]
    1  adds `schema` and `render_key` (fingerprint of the rendering code; None after a migration,
       so the no-op fast path never trusts a key computed by older code)

Reading migrates in memory; `apply` writes migrated files back under its lock (Store.migrate), so
an upgrade never restarts anything just to rewrite its state. A file from a newer sparc-agent is
refused rather than half-understood.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from sparc_agent.errors import EnvironmentProblem
from sparc_agent.state.files import write_atomic
from sparc_agent.state.paths import PRIVATE_FILE_MODE
from sparc_agent.state.plan import ServicePlan

SCHEMA: Final = 1
META_FILE: Final = "meta.json"


class StateProblem(EnvironmentProblem):
    """A state file sparc-agent cannot read: corrupt, or written by a newer version."""


class Status(enum.StrEnum):
    APPLYING = "applying"  # recorded, being brought up (or the apply was killed: see apply)
    HEALTHY = "healthy"
    FAILED = "failed"


@dataclass(frozen=True)
class TargetVersions:
    """What the files were rendered for."""

    podman: str
    quadlet: str
    systemd: int


@dataclass(frozen=True)
class SecretSource:
    file: str | None = None
    env: str | None = None


@dataclass(frozen=True)
class SupervisionPlan:
    services: tuple[ServicePlan, ...] = ()
    secret_sources: Mapping[str, SecretSource] = field(default_factory=dict)
    # names.port_key -> who publishes that host port (profile.rules.port_publishers): named when taken
    published: Mapping[str, str] = field(default_factory=dict)

    def sources_json(self) -> dict[str, dict[str, str]]:
        """{"name": {"file": PATH} or {"env": VAR}}: the form probes read secrets by (StackPlan)."""
        return {
            n: {"file": s.file} if s.file else {"env": s.env or ""} for n, s in self.secret_sources.items()
        }


@dataclass(frozen=True)
class GenerationMeta:
    number: int
    created: str  # ISO 8601, UTC
    status: Status
    files: Mapping[str, str]  # relative path -> sha256 of the rendered text
    plan: SupervisionPlan
    secrets: Mapping[str, str]  # secret -> salted fingerprint of its value
    target: TargetVersions | None
    digest: str  # of the merged profile document
    sources: tuple[str, ...]  # the profile files (-f) it came from
    input_key: str | None  # apply.fastpath.input_key of the command line, None when not given
    render_key: str | None = None  # render.fingerprint() of the code that rendered the files
    failed: str | None = None  # the service that did not become healthy
    reason: str = ""
    schema: int = SCHEMA

    def with_status(self, status: Status, failed: str | None = None, reason: str = "") -> GenerationMeta:
        return replace(self, status=status, failed=failed, reason=reason)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["sources"] = list(self.sources)
        data["plan"]["services"] = list(data["plan"]["services"])
        return data


def _from_v0(raw: dict[str, Any]) -> dict[str, Any]:
    return {**raw, "schema": 1, "render_key": None}


MIGRATIONS: Final = {0: _from_v0}  # schema N -> N+1


def parse(raw: dict[str, Any]) -> GenerationMeta:
    """meta.json's content at any known schema, as the current type. Raises KeyError/TypeError/ValueError."""
    version = int(raw.get("schema", 0))
    if version > SCHEMA:
        raise StateProblem(
            f"written by a newer sparc-agent (state schema {version}, this one reads up to {SCHEMA})"
        )
    while version < SCHEMA:
        raw = MIGRATIONS[version](raw)
        version = int(raw["schema"])
    plan = raw["plan"]
    target = raw.get("target")
    return GenerationMeta(
        number=int(raw["number"]),
        created=str(raw["created"]),
        status=Status(raw["status"]),
        files=dict(raw["files"]),
        plan=SupervisionPlan(
            tuple(ServicePlan(**s) for s in plan["services"]),
            {n: SecretSource(**s) for n, s in plan.get("secret_sources", {}).items()},
            dict(plan.get("published", {})),  # absent before it was recorded: nobody named
        ),
        secrets=dict(raw.get("secrets", {})),
        target=TargetVersions(**target) if target else None,
        digest=str(raw["digest"]),
        sources=tuple(raw.get("sources", ())),
        input_key=raw.get("input_key"),
        render_key=raw.get("render_key"),
        failed=raw.get("failed"),
        reason=str(raw.get("reason", "")),
        schema=version,
    )


def schema_on_disk(directory: Path) -> int:
    """The schema a generation's meta.json was written at (0 before schemas existed)."""
    return int(json.loads((directory / META_FILE).read_text()).get("schema", 0))


def read_meta(directory: Path) -> GenerationMeta:
    path = directory / META_FILE
    try:
        return parse(json.loads(path.read_text()))
    except StateProblem as exc:
        raise StateProblem(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateProblem(f"{path}: not a sparc-agent generation record ({exc!r})") from None


def write_meta(directory: Path, meta: GenerationMeta) -> None:
    """0600: it names the secret sources and their fingerprints."""
    write_atomic(directory / META_FILE, json.dumps(meta.to_json(), indent=2).encode(), mode=PRIVATE_FILE_MODE)
