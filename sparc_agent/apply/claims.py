"""Before the first write, ask systemd whether a unit the stack would write is already someone else's.

A unit name is claimed by whoever's file systemd loads it from. A hand-written
`~/.config/systemd/user/STACK-web.service` outranks the unit quadlet generates from our
`STACK-web.container`, so apply would start someone else's service; a stack may only write
units that systemd does not know yet, or knows from a file this stack wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sparc_agent.errors import EnvironmentProblem
from sparc_agent.host.systemd import UnitState, UserManager
from sparc_agent.render import is_ours, owner, unit_of


class ForeignUnit(EnvironmentProblem):
    """A unit name the stack would write is already loaded from a file it did not write."""


def whose(state: UnitState, stack: str) -> str | None:
    """Why `state`'s unit is not `stack`'s to write, or None when it is (unknown, or from our file)."""
    if not state.exists:
        return None
    if state.load_state == "masked":
        return f"it is masked ({state.fragment_path})"
    source = state.source_path or state.fragment_path  # a generated unit names the file it came from
    try:
        text = Path(source).read_text(errors="replace") if source else ""
    except FileNotFoundError:
        return None  # removed since the last reload: nobody's any more
    except OSError as exc:
        return f"its file {source} cannot be read ({exc.strerror})"
    if not is_ours(text):
        return f"it is loaded from {source or '(no file)'}, which sparc-agent did not write"
    if owner(text) != stack:
        theirs = owner(text)
        return f"it is loaded from {source}, {f'stack {theirs}' if theirs else 'the agent'}'s file"
    return None


async def refuse_foreign_units(mgr: UserManager, stack: str, files: Iterable[str]) -> None:
    """Raise ForeignUnit naming every unit of `files` that systemd loads from someone else's file."""
    problems = []
    for unit in sorted({unit_of(rel) for rel in files}):
        why = whose(await mgr.unit_state(unit), stack)
        if why is not None:
            problems.append(f"{unit}: {why}")
    if problems:
        raise ForeignUnit(
            f"stack {stack} would take over units that are not its own; nothing was written:\n  "
            + "\n  ".join(problems)
            + "\nrename the stack (or the service), or move those files away, then apply again"
        )
