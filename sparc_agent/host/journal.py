"""The user journal, read through journalctl: a unit's last lines, for the messages of a failed start."""

from __future__ import annotations

from sparc_agent.host.process import run


def journal_tail(unit: str, lines: int = 12) -> str:
    """The last `lines` messages of a user unit, "" when journalctl cannot tell."""
    done = run(["journalctl", "--user-unit", unit, "-n", str(lines), "--no-pager", "-o", "cat"], timeout=10)
    return done.stdout.strip()
