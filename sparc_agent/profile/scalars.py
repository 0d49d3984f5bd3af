"""Checks of single profile values that need no pydantic: the probes' specs use them too.

Each returns the value (normalised) or raises ValueError with a message that says what is allowed;
the profile's model wraps them as validators, so the messages reach the user with file and line.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

# any C0 control character but TAB, and DEL: they could end a unit-file line or a C string
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class ItemError(ValueError):
    """A problem with one item of a list (or key of a mapping): the error names the item's own key
    path (`services.web.command[1]`), not its parent's."""

    def __init__(self, key: int | str, message: str) -> None:
        super().__init__(message)
        self.key = key


def no_control(value: str) -> str:
    if CONTROL.search(value):
        raise ValueError("contains a control character such as a newline or NUL (not allowed in unit files)")
    return value


def describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe(value)}")
    return no_control(value)


def http_path(value: Any) -> str:
    path = text(value)
    if not path.startswith("/") or any(c.isspace() for c in path):
        raise ValueError(f"invalid path {path!r} (allowed: starts with '/', no spaces)")
    return path


def status_range(value: Any) -> tuple[int, int]:
    allowed = '(allowed: a status like 200, or a range like "200-399")'
    if isinstance(value, tuple) and len(value) == 2:  # already parsed (a spec built in code)
        lo, hi = value
    elif isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    elif isinstance(value, str) and re.fullmatch(r"\d{3}(-\d{3})?", value.strip()):
        a, _, b = value.strip().partition("-")
        lo, hi = int(a), int(b or a)
    else:
        raise ValueError(f"invalid status {value!r} {allowed}")
    if not 100 <= lo <= hi <= 599:
        raise ValueError(f"invalid status {value!r} {allowed}")
    return lo, hi


def argv(value: Any) -> tuple[str, ...]:
    """A command: a list of strings, or one string split like a shell would (no expansion)."""
    if isinstance(value, str):
        try:
            items: list[Any] = shlex.split(no_control(value))
        except ValueError as exc:
            raise ValueError(
                f"cannot split command: {exc} (allowed: a list of strings, or a shell-quoted string)"
            ) from None
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"expected a list of strings or a string, got {describe(value)}")
    if not items:
        raise ValueError("command is empty (allowed: at least one word)")
    # a list's words are the profile's own items: name them; a string's words exist only after splitting
    listed = isinstance(value, list | tuple)

    def fail(i: int, message: str) -> ValueError:
        return ItemError(i, message) if listed else ValueError(message)

    for i, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise fail(i, f"word {i} is {describe(item)} (allowed: strings)")
        if CONTROL.search(str(item)):
            raise fail(i, f"word {i} contains a control character such as a newline or NUL")
        if re.fullmatch(r"\\*;", str(item)):
            # systemd splits ExecStart= at a lone ';' and quadlet drops the command: no quoting helps
            raise fail(i, f"word {i} is a lone {item!r}, which systemd reads as a command separator")
    return tuple(str(item) for item in items)


def parse_duration(value: Any) -> float:
    """'500ms', '2s', '3m', '1h', '1m30s' -> seconds."""
    allowed = "(allowed: a duration such as 500ms, 2s, 3m, 1h or 1m30s)"
    if not isinstance(value, str):
        raise ValueError(f"expected a duration string, got {describe(value)} {allowed}")
    text = value.strip()
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {value!r} {allowed}")
    return total
