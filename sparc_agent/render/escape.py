"""One escaping function per syntax of a systemd/quadlet unit file.

Validation has already refused control characters (newline, NUL, ...), so what
is left to neutralise is systemd's own expansion: `%` specifiers everywhere, `$`
variables on command lines (quadlet copies Exec=, Environment= and Volume=
into ExecStart= as they are), and quoting where a value is split into words.
"""

from __future__ import annotations

from collections.abc import Iterable

from sparc_agent.profile.scalars import CONTROL


def _literal(value: str) -> str:
    if CONTROL.search(value):  # a second line of defence: never emit a line break
        raise ValueError(f"refusing to render a control character in {value!r}")
    return value.replace("%", "%%").replace("$", "$$")


def unit_value(value: str) -> str:
    """A whole-line value (Image=, Volume=, PublishPort=): literal, unquoted.

    Leading/trailing blanks would be stripped by systemd and a trailing backslash
    would continue the line, so such values are refused here.
    """
    if value != value.strip() or value.endswith("\\"):
        raise ValueError(f"refusing to render {value!r}: blank at either end or trailing backslash")
    return _literal(value)


def unit_path(value: str) -> str:
    """A whole-line value whose leading `~` means the home of the user whose manager runs the unit:
    that becomes the `%h` specifier, the rest stays literal (`unit_value`)."""
    if value == "~" or value.startswith(("~/", "~:")):
        return "%h" + unit_value(value[1:])
    return unit_value(value)


def unit_word(value: str) -> str:
    """One word of a word list (Exec=, Environment=, PodmanArgs=), always double-quoted."""
    escaped = _literal(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def unit_words(values: Iterable[str]) -> str:
    return " ".join(unit_word(v) for v in values)


def bare_word(value: str) -> str:
    """A word known to be safe unquoted (flags we build ourselves); quoted when it is not."""
    safe = value and all(c.isalnum() or c in "-_=./:,@+" for c in value)
    return value if safe else unit_word(value)
