"""What was applied, generation by generation, under STATE_DIR/STACK/ (paths in state.paths).

    generations/000007/profile.yaml   the merged profile (after -f and --set), re-loadable
    generations/000007/files/...      the rendered files, byte for byte
    generations/000007/meta.json      state.meta.GenerationMeta: hashes, plan, secrets, status
    current -> generations/000007     swapped atomically (symlink + rename)
    live -> generations/000007/files  what systemd reads (state.live); never pruned either

The agent supervises `current`; rollback re-applies the generation before it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sparc_agent.state.files import fsync_dir, write_atomic
from sparc_agent.state.meta import SCHEMA, GenerationMeta, Status, read_meta, schema_on_disk, write_meta
from sparc_agent.state.paths import PRIVATE_FILE_MODE, STATE_DIR_MODE, StackPaths

KEEP = 10


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Generation:
    number: int
    directory: Path
    meta: GenerationMeta = field(compare=False)

    @property
    def profile_path(self) -> Path:
        return self.directory / "profile.yaml"

    @property
    def files_dir(self) -> Path:
        """The rendered files, as state.live links them: containers/systemd/..., systemd/user/..."""
        return self.directory / "files"

    @property
    def files(self) -> dict[str, str]:
        """relative path -> text"""
        return {rel: (self.files_dir / rel).read_text() for rel in self.meta.files}

    @property
    def secrets(self) -> dict[str, str]:
        return dict(self.meta.secrets)


class Store:
    @staticmethod
    def hashes(files: dict[str, str]) -> dict[str, str]:
        return {rel: sha256(text) for rel, text in sorted(files.items())}

    def __init__(self, root: Path | StackPaths) -> None:
        self.paths = root if isinstance(root, StackPaths) else StackPaths(root)
        self.root = self.paths.root
        self.generations = self.paths.generations

    def _load(self, directory: Path) -> Generation:
        return Generation(int(directory.name), directory, read_meta(directory))

    def current(self) -> Generation | None:
        if not self.paths.current.is_symlink():
            return None
        return self._load(self.root / os.readlink(self.paths.current))

    def all(self) -> list[Generation]:
        if not self.generations.is_dir():
            return []
        dirs = sorted(
            d for d in self.generations.iterdir() if d.name.isdigit() and (d / "meta.json").exists()
        )
        return [self._load(d) for d in dirs]

    def migrate(self) -> list[int]:
        """Rewrite every generation recorded at an older schema at this one (callers hold the apply
        lock). Only the records change: nothing is restarted. Returns the numbers rewritten."""
        rewritten = []
        for generation in self.all():
            if schema_on_disk(generation.directory) < SCHEMA:
                write_meta(generation.directory, generation.meta)
                rewritten.append(generation.number)
        return rewritten

    def record(self, document: Any, files: dict[str, str], draft: GenerationMeta) -> Generation:
        """Store a new generation (not yet current). Written to a temp dir, then renamed into place.
        `draft` carries everything but the number, the time and the file hashes, filled in here."""
        import yaml  # only writers need it

        ensure_private_dir(self.root)
        existing = self.all()
        number = existing[-1].number + 1 if existing else 1
        final = self.generations / f"{number:06d}"
        tmp = self.generations / f".{number:06d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for rel, text in files.items():
            write_atomic(tmp / "files" / rel, text.encode())
        profile = yaml.safe_dump(document, sort_keys=False).encode()
        write_atomic(tmp / "profile.yaml", profile, mode=PRIVATE_FILE_MODE)
        meta = replace(
            draft,
            number=number,
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            files=self.hashes(files),
        )
        write_meta(tmp, meta)
        os.rename(tmp, final)
        fsync_dir(self.generations)
        return Generation(number, final, meta)

    def set_current(self, generation: Generation) -> None:
        if self.paths.current_target() == os.path.relpath(generation.directory, self.root):
            return
        tmp = self.root / ".current.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(os.path.relpath(generation.directory, self.root), tmp)
        os.replace(tmp, self.paths.current)
        fsync_dir(self.root)
        self._prune(keep_also=generation.number)

    def clear_current(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.paths.current.unlink()
            fsync_dir(self.root)

    def set_status(
        self, generation: Generation, status: Status, failed: str | None = None, reason: str = ""
    ) -> Generation:
        return self.rewrite(generation, generation.meta.with_status(status, failed, reason))

    def rewrite(self, generation: Generation, meta: GenerationMeta) -> Generation:
        write_meta(generation.directory, meta)
        return Generation(generation.number, generation.directory, meta)

    def _prune(self, keep_also: int) -> None:
        gens = self.all()
        keep = {keep_also, self.paths.live_number()}
        for gen in gens[:-KEEP]:
            if gen.number not in keep:
                shutil.rmtree(gen.directory, ignore_errors=True)


def ensure_private_dir(directory: Path) -> None:
    """STATE_DIR and each stack's directory: 0700 (profiles, secret fingerprints, the salt)."""
    state_dir = directory.parent
    for d in (state_dir, directory):
        d.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
        if d.stat().st_mode & 0o777 != STATE_DIR_MODE:
            d.chmod(STATE_DIR_MODE)
