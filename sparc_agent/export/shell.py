"""The one shell-quoting function of the SLURM exporter (bash syntax)."""

from __future__ import annotations

import re

from sparc_agent.profile.scalars import CONTROL

_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def sh_quote(value: str) -> str:
    """One literal bash word: left bare when it is plainly safe, else single-quoted.

    Inside single quotes bash expands nothing; a single quote itself is written as '\\''.
    Control characters were refused by validation; refusing them again keeps a newline from ever
    starting a second command.
    """
    if CONTROL.search(value):
        raise ValueError(f"refusing to quote a control character in {value!r}")
    if _SAFE.fullmatch(value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


def sh_words(values: list[str] | tuple[str, ...]) -> str:
    return " ".join(sh_quote(v) for v in values)


def sh_path(path: str) -> str:
    """A host path from the profile; `~` becomes "$HOME" at run time (the job's user, like %h in units)."""
    if path == "~" or path.startswith("~/"):
        return '"$HOME"' + (sh_quote(path[1:]) if len(path) > 1 else "")
    return sh_quote(path)
