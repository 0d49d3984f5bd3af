"""Replace a set of files as one step: all old or all new, even across a kill -9.

Phase 1 writes every new file beside its target (`.NAME.sparc-new`, fsynced) and then a
journal naming them; phase 2 renames them over the targets and unlinks removed files.
A crash before the journal exists leaves the old files (stray temps are swept); after
it, `recover()` finishes phase 2. Each rename is atomic, so no file is ever half-written.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from sparc_agent.state.files import crash_point, fsync_dir, write_atomic

TEMP_SUFFIX = ".sparc-new"


def _temp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_SUFFIX}")


def commit(root: Path, writes: Mapping[str, str], removes: Sequence[str], journal: Path) -> None:
    """Write `writes` (relative to root) and remove `removes`, all or nothing."""
    for rel, text in writes.items():
        write_atomic(_temp_for(root / rel), text.encode())
    crash_point("after-temps")
    record = {"root": str(root), "writes": sorted(writes), "removes": sorted(removes)}
    write_atomic(journal, json.dumps(record).encode(), mode=0o600)
    crash_point("after-journal")
    _finish(root, record["writes"], record["removes"], halfway=True)
    journal.unlink()


def recover(journal: Path, root: Path) -> bool:
    """Finish an interrupted commit (roll forward); sweep temps of one that never got a journal."""
    finished = False
    if journal.exists():
        record = json.loads(journal.read_text())
        _finish(Path(record["root"]), record["writes"], record["removes"], halfway=False)
        journal.unlink()
        finished = True
    for directory in {root / "containers/systemd", root / "systemd/user"}:
        if directory.is_dir():
            for stray in directory.glob(f".*{TEMP_SUFFIX}"):
                stray.unlink()
    return finished


def _finish(root: Path, writes: Sequence[str], removes: Sequence[str], halfway: bool) -> None:
    dirs: set[Path] = set()
    for i, rel in enumerate(writes):
        target = root / rel
        temp = _temp_for(target)
        if temp.exists():  # on recovery, an already renamed file has no temp any more
            os.replace(temp, target)
        dirs.add(target.parent)
        if halfway and i == len(writes) // 2:
            crash_point("mid-rename")
    for rel in removes:
        with contextlib.suppress(FileNotFoundError):
            (root / rel).unlink()
        dirs.add((root / rel).parent)
    for directory in dirs:
        if directory.exists():
            fsync_dir(directory)
