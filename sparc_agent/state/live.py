"""A stack's unit files as systemd and quadlet read them: links through one symlink, switched by one rename.

    $XDG_CONFIG_HOME/containers/systemd/sparc-agent-STACK -> STATE/STACK/live/containers/systemd
    $XDG_CONFIG_HOME/systemd/user/STACK.target            -> STATE/STACK/live/systemd/user/STACK.target
    STATE/STACK/live -> generations/000007/files          THE switch: symlink + rename

A generation's files never change once recorded, so whenever a reader looks (a daemon-reload: the
quadlet generator, then systemd loading units), `live` names one whole set, the old or the new,
even if apply was killed a microsecond before or after the rename. quadlet >= 5.3 follows a symlinked
subdirectory of its search path (podman #23755) and resolves it once per run. systemd does not read
subdirectories, so each plain unit is a link of its own through `live`: created before the switch
(a link to a file the old set lacks dangles until then, and systemd ignores a dangling link: the unit
is "not-found") and removed after it when the new set lacks it. While the stack has no files, `live`
names the empty directory `empty/`, so no link of ours ever dangles for quadlet.

The directory name `sparc-agent-STACK` cannot be a stack's unit (the `sparc-agent` prefix is reserved,
profile.names) and has no `.d` suffix (quadlet skips those as drop-in directories).

Older quadlets do not follow the link: there apply keeps state.commit's journaled flat files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sparc_agent.errors import EnvironmentProblem
from sparc_agent.profile.names import AGENT, QUADLET_DIR, UNIT_DIR
from sparc_agent.state.files import crash_point, fsync_dir, write_atomic
from sparc_agent.state.paths import StackPaths

ADOPTED = ".adopted-"  # STATE/STACK/.adopted-XXXX/: a copy of an old-layout stack's files, while it moves


class LinkTaken(EnvironmentProblem):
    """The place of one of the stack's links holds something sparc-agent did not put there."""


@dataclass(frozen=True)
class Live:
    config_home: Path
    state: StackPaths
    linked: bool = True  # False: this host's quadlet does not follow the link (< 5.3): flat files

    @property
    def quadlet_link(self) -> Path:
        return self.config_home / QUADLET_DIR / f"{AGENT}-{self.state.name}"

    @property
    def unit_dir(self) -> Path:
        return self.config_home / UNIT_DIR

    def _via_live(self, name: str) -> str:
        return str(self.state.live / UNIT_DIR / name)

    def target(self) -> Path | None:
        """The directory `live` names (resolved), None when there is no `live`."""
        return self.state.live.resolve() if self.state.live.is_symlink() else None

    def unit_links(self) -> set[str]:
        """The names of this stack's links in the unit directory, dangling ones included."""
        if not self.unit_dir.is_dir():
            return set()
        return {
            p.name
            for p in self.unit_dir.iterdir()
            if p.is_symlink() and os.readlink(p) == self._via_live(p.name)
        }

    def visible(self, rel: str) -> Path:
        """Where a reader finds the file `rel` (relative to config_home) of this stack: a flat file
        of that name first (quadlet reads its top directory before the link), else through the link."""
        flat = self.config_home / rel
        if rel.startswith(f"{QUADLET_DIR}/") and not flat.is_file():
            return self.quadlet_link / flat.name
        return flat

    def view(self) -> dict[str, str]:
        """{path relative to config_home: text} of what a reader finds through the links."""
        found: dict[str, str] = {}
        if self.quadlet_link.is_symlink() and self.quadlet_link.is_dir():
            for path in sorted(self.quadlet_link.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    found[f"{QUADLET_DIR}/{path.name}"] = path.read_text(errors="replace")
        for name in sorted(self.unit_links()):
            with contextlib.suppress(FileNotFoundError):  # dangling: not in the set `live` names
                found[f"{UNIT_DIR}/{name}"] = (self.unit_dir / name).read_text(errors="replace")
        return found

    def switch(self, files: Path) -> None:
        """Make `files` (a directory with containers/systemd/ and systemd/user/) what systemd and
        quadlet read, in one rename. A unit that is a regular file with the same bytes (an adopted
        stack's) becomes a link after the switch: nothing a reader sees changes then."""
        files = files.resolve()
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        if not self.state.live.is_symlink():
            self._point(self._empty())
        self._link(self.quadlet_link, str(self.state.live / QUADLET_DIR))
        wanted = {p.name for p in (files / UNIT_DIR).iterdir()} if (files / UNIT_DIR).is_dir() else set()
        for name in sorted(wanted):
            if not os.path.lexists(self.unit_dir / name):
                self._link(self.unit_dir / name, self._via_live(name))
        fsync_dir(self.unit_dir)
        crash_point("before-switch")
        self._point(files)
        crash_point("after-switch")
        for name in sorted(wanted):
            path = self.unit_dir / name
            if not path.is_symlink() and path.read_bytes() == (files / UNIT_DIR / name).read_bytes():
                self._link(path, self._via_live(name), replace=True)
        for name in self.unit_links() - wanted:
            (self.unit_dir / name).unlink()
        fsync_dir(self.unit_dir)
        self._sweep(keep=files)

    def adopt(self, flat: Mapping[str, str]) -> None:
        """Move an old-layout stack's regular files (`flat`: path relative to config_home -> text)
        behind the links without changing what a reader sees: a copy of them goes live first (the
        flat quadlets shadow their copies, quadlet reads its top directory first), then they go."""
        if not flat:
            return
        copy = Path(tempfile.mkdtemp(prefix=ADOPTED, dir=self.state.root))
        for rel, text in {**self.view(), **flat}.items():  # the links' part of an adoption cut short too
            write_atomic(copy / rel, text.encode())
        self.switch(copy)
        for rel in flat:
            if rel.startswith(f"{QUADLET_DIR}/"):
                with contextlib.suppress(FileNotFoundError):
                    (self.config_home / rel).unlink()
        fsync_dir(self.config_home / QUADLET_DIR)

    def remove(self) -> None:
        """Take every file of the stack away at once (`live` names `empty/`), then the links."""
        if self.state.live.is_symlink():
            self._point(self._empty())
        crash_point("after-empty")
        for name in self.unit_links():
            (self.unit_dir / name).unlink()
        if self.quadlet_link.is_symlink():
            self.quadlet_link.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.state.live.unlink()
        self._sweep(keep=None)
        shutil.rmtree(self.state.empty, ignore_errors=True)

    def _empty(self) -> Path:
        for sub in (QUADLET_DIR, UNIT_DIR):
            (self.state.empty / sub).mkdir(parents=True, exist_ok=True)
        return self.state.empty

    def _point(self, directory: Path) -> None:
        """`live` -> directory, by symlink + rename: the one atomic step."""
        tmp = self.state.root / ".live.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(os.path.relpath(directory.resolve(), self.state.root.resolve()), tmp)
        os.replace(tmp, self.state.live)
        fsync_dir(self.state.root)

    def _link(self, path: Path, to: str, replace: bool = False) -> None:
        if path.is_symlink() and os.readlink(path) == to:
            return
        if os.path.lexists(path) and not replace:
            raise LinkTaken(
                f"{path} exists and is not sparc-agent's link to {to}: move it away, then apply again"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.sparc-link")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(to, tmp)
        os.replace(tmp, path)

    def _sweep(self, keep: Path | None) -> None:
        """Remove adoption copies that `live` no longer names."""
        for copy in self.state.root.glob(f"{ADOPTED}*"):
            if copy.resolve() != keep:
                shutil.rmtree(copy, ignore_errors=True)
