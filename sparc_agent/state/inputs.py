"""When each input of a stack's running units last took effect, as systemd and podman see it.

A service runs what it was started from, not what is on disk. To compare what RUNS with what is
wanted, apply records here when each input took effect: a unit file from the daemon-reload that
loaded it, a podman secret from the moment it was replaced. A service whose main process started
before one of its inputs took effect runs an older generation and must be restarted, whoever
started it (apply, systemd's Restart=, the agent). Times are CLOCK_REALTIME µs, systemd's unit
timestamps' clock. STATE_DIR/STACK/inputs.json (state.paths), 0600, rewritten atomically.

`since_us == 0` means "took effect before records were kept" (state of an older sparc-agent):
trusted as running, as the old code did.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from sparc_agent.state.files import write_atomic
from sparc_agent.state.paths import PRIVATE_FILE_MODE

SCHEMA: Final = 1


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class Input:
    digest: str  # sha256 of a file as loaded; a secret's salted fingerprint as put
    since_us: int


@dataclass
class Inputs:
    files: dict[str, Input] = field(default_factory=dict)  # path relative to config_home
    secrets: dict[str, Input] = field(default_factory=dict)  # secret name in the profile
    kept: bool = True  # False: no record of files yet (first apply, or state of an older sparc-agent)

    @classmethod
    def read(cls, path: Path) -> Inputs:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(kept=False)
        except ValueError:  # a torn record cannot be: write_atomic; a hand-edited one counts as none
            return cls(kept=False)
        files = raw.get("files")
        return cls(
            {k: Input(**v) for k, v in (files or {}).items()},
            {k: Input(**v) for k, v in raw.get("secrets", {}).items()},
            kept=files is not None,
        )

    def write(self, path: Path) -> None:
        data = {
            "schema": SCHEMA,
            "files": {k: vars(v) for k, v in sorted(self.files.items())} if self.kept else None,
            "secrets": {k: vars(v) for k, v in sorted(self.secrets.items())},
        }
        write_atomic(path, json.dumps(data, indent=1).encode(), mode=PRIVATE_FILE_MODE)

    def loaded(self, wanted: Mapping[str, str], reloaded_at: int | None) -> None:
        """The files systemd now runs on: `wanted` (path -> sha256). A file whose digest differs from
        the record took effect at `reloaded_at` (None: no reload happened, so only files never recorded
        before can be new here, and they count from before records were kept)."""
        files = {}
        for rel, digest in wanted.items():
            old = self.files.get(rel)
            if old is not None and old.digest == digest:
                files[rel] = old
            else:
                files[rel] = Input(digest, reloaded_at if reloaded_at is not None else 0)
        self.files, self.kept = files, True

    def mismatched(self, wanted: Mapping[str, str]) -> list[str]:
        """Files whose recorded digest is not the wanted one (written by a killed apply, edited...)."""
        if not self.kept:
            return []
        return sorted(
            rel for rel, digest in wanted.items() if self.files.get(rel, Input("", 0)).digest != digest
        )

    def put(self, secret: str, fingerprint: str, at: int | None) -> None:
        """A secret now holds the value of `fingerprint`: replaced at `at`, or unchanged (None)."""
        old = self.secrets.get(secret)
        if at is not None or old is None or old.digest != fingerprint:
            self.secrets[secret] = Input(fingerprint, at if at is not None else 0)

    def since(self, keys: Mapping[str, list[str]]) -> int:
        """The latest time any of these inputs took effect: {"files": [...], "secrets": [...]}."""
        times = [self.files[k].since_us for k in keys.get("files", []) if k in self.files]
        times += [self.secrets[k].since_us for k in keys.get("secrets", []) if k in self.secrets]
        return max(times, default=0)
