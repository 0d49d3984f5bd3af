"""What was applied, generation by generation, under $XDG_STATE_HOME/sparc-agent/STACK/.

    generations/000007/profile.yaml   the merged profile (after -f and --set), re-loadable
    generations/000007/files/...      the rendered files, byte for byte
    generations/000007/meta.json      time, hashes, target versions, secret fingerprints, status
    current -> generations/000007     swapped atomically (symlink + rename)

The agent supervises `current`; rollback re-applies the generation before it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparc_agent.state.files import fsync_dir, write_atomic

KEEP = 10


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Generation:
    number: int
    directory: Path
    meta: dict[str, Any] = field(compare=False)

    @property
    def profile_path(self) -> Path:
        return self.directory / "profile.yaml"

    @property
    def files(self) -> dict[str, str]:
        """relative path -> text"""
        root = self.directory / "files"
        return {rel: (root / rel).read_text() for rel in self.meta["files"]}

    @property
    def secrets(self) -> dict[str, str]:
        fingerprints: dict[str, str] = self.meta.get("secrets", {})
        return fingerprints


class Store:
    @staticmethod
    def hashes(files: dict[str, str]) -> dict[str, str]:
        return {rel: sha256(text) for rel, text in sorted(files.items())}

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generations = root / "generations"

    @property
    def journal(self) -> Path:
        return self.root / "commit.journal"

    @property
    def lock_path(self) -> Path:
        return self.root / "apply.lock"

    def _load(self, directory: Path) -> Generation:
        meta = json.loads((directory / "meta.json").read_text())
        return Generation(int(directory.name), directory, meta)

    def current(self) -> Generation | None:
        link = self.root / "current"
        if not link.is_symlink():
            return None
        return self._load(self.root / os.readlink(link))

    def all(self) -> list[Generation]:
        if not self.generations.is_dir():
            return []
        dirs = sorted(
            d for d in self.generations.iterdir() if d.name.isdigit() and (d / "meta.json").exists()
        )
        return [self._load(d) for d in dirs]

    def record(self, document: Any, files: dict[str, str], meta: dict[str, Any]) -> Generation:
        """Store a new generation (not yet current). Written to a temp dir, then renamed into place."""
        import yaml  # only writers need it

        existing = self.all()
        number = existing[-1].number + 1 if existing else 1
        final = self.generations / f"{number:06d}"
        tmp = self.generations / f".{number:06d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for rel, text in files.items():
            write_atomic(tmp / "files" / rel, text.encode())
        write_atomic(tmp / "profile.yaml", yaml.safe_dump(document, sort_keys=False).encode(), mode=0o600)
        full_meta = {
            **meta,
            "number": number,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "files": self.hashes(files),
        }
        write_atomic(tmp / "meta.json", json.dumps(full_meta, indent=2).encode())
        os.rename(tmp, final)
        fsync_dir(self.generations)
        return Generation(number, final, full_meta)

    def set_current(self, generation: Generation) -> None:
        tmp = self.root / ".current.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(os.path.relpath(generation.directory, self.root), tmp)
        os.replace(tmp, self.root / "current")
        fsync_dir(self.root)
        self._prune(keep_also=generation.number)

    def update_meta(self, generation: Generation, **changes: Any) -> Generation:
        meta = {**generation.meta, **changes}
        write_atomic(generation.directory / "meta.json", json.dumps(meta, indent=2).encode())
        return Generation(generation.number, generation.directory, meta)

    def _prune(self, keep_also: int) -> None:
        gens = self.all()
        for gen in gens[:-KEEP]:
            if gen.number != keep_also:
                shutil.rmtree(gen.directory, ignore_errors=True)
