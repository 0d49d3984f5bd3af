"""What a daemon-reload reads of a stack, as quadlet >= 5.3 and systemd read it: the atomicity oracle
of the generation switch (tests/test_live.py, tests/test_apply_kill_e2e.py, tests/test_switch_e2e.py).

quadlet reads containers/systemd/ and then each subdirectory under it, following a symlinked one
(podman #23755); of two files with one name the first read wins. systemd reads the files of
systemd/user/ (no subdirectories), following links and ignoring a dangling one.
"""

from __future__ import annotations

from pathlib import Path


def _ours(name: str, stack: str) -> bool:
    return name.startswith((f"{stack}.", f"{stack}-")) and not name.startswith(".")


def reader_view(config_home: Path, stack: str) -> dict[str, str]:
    """{path relative to config_home: text} of the stack's files a reader loads."""
    seen: dict[str, str] = {}
    top = config_home / "containers" / "systemd"
    dirs = [top, *sorted(p for p in top.iterdir() if p.is_dir())] if top.is_dir() else []
    for directory in dirs:
        for path in sorted(directory.iterdir()):
            rel = f"containers/systemd/{path.name}"
            if path.is_file() and _ours(path.name, stack) and rel not in seen:
                seen[rel] = path.read_text()
    units = config_home / "systemd" / "user"
    for path in sorted(units.iterdir()) if units.is_dir() else []:
        if path.is_file() and _ours(path.name, stack):  # is_file() is False for a dangling link
            seen[f"systemd/user/{path.name}"] = path.read_text()
    return seen


def dangling(config_home: Path) -> list[str]:
    """Links under the unit directories that lead nowhere (quadlet 5.4 refuses to generate anything
    when one of its files is such a link)."""
    found = []
    for sub in ("containers/systemd", "systemd/user"):
        directory = config_home / sub
        for path in directory.iterdir() if directory.is_dir() else []:
            if path.is_symlink() and not path.exists():
                found.append(f"{sub}/{path.name}")
    return found


def quadlet_file(config_home: Path, stack: str, name: str) -> Path:
    """Where a reader finds the stack's quadlet `name`: a flat file first, else through the stack's
    link (state.live: containers/systemd/sparc-agent-STACK/)."""
    top = config_home / "containers" / "systemd"
    return top / name if (top / name).is_file() else top / f"sparc-agent-{stack}" / name
