"""The agent's event log: structlog, one event per state change and restart decision.

Formats (`--log-format`):
  journal  native journald entries over /run/systemd/journal/socket (datagram protocol, no libsystemd):
           every field becomes a journal field, e.g. SPARC_SERVICE=riva SPARC_EVENT=restart, so
           `journalctl --user -u sparc-agent SPARC_SERVICE=riva` finds them. Default under systemd
           (JOURNAL_STREAM set) when the socket exists.
  json     one JSON object a line on stderr (default elsewhere)
  console  short human lines on stderr
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time
from collections.abc import MutableMapping
from typing import Any, Final, TextIO

import structlog

JOURNAL_SOCKET: Final = "/run/systemd/journal/socket"
PRIORITY: Final = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
# fields shown in the human MESSAGE, in this order
_MESSAGE_KEYS: Final = ("state", "reason", "probe", "attempt", "backoff", "by")
_MAX_VALUE: Final = 4096


def default_format(env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    if env.get("JOURNAL_STREAM") and os.path.exists(JOURNAL_SOCKET):
        return "journal"
    return "json"


def journal_field(key: str) -> str:
    """service -> SPARC_SERVICE: journal field names are upper case letters, digits and '_'."""
    name = "".join(c if c.isalnum() else "_" for c in key.upper())
    return "SPARC_" + name.lstrip("_")


def human(event: MutableMapping[str, Any]) -> str:
    where = "/".join(str(event[k]) for k in ("stack", "service") if event.get(k))
    parts = [f"{where}:" if where else "", str(event.get("event", ""))]
    parts += [f"{k}={event[k]}" for k in _MESSAGE_KEYS if event.get(k) not in (None, "")]
    return " ".join(p for p in parts if p)


def encode_journal(event: MutableMapping[str, Any]) -> bytes:
    """The native protocol: KEY=value lines; values with a newline as KEY\\n<le64 length><bytes>\\n."""
    fields: list[tuple[str, str]] = [
        ("MESSAGE", human(event)),
        ("PRIORITY", str(PRIORITY.get(str(event.get("level", "info")), 6))),
        ("SYSLOG_IDENTIFIER", "sparc-agent"),
    ]
    for key, value in event.items():
        if key in ("level", "timestamp") or value is None:
            continue
        fields.append((journal_field(key), value if isinstance(value, str) else json.dumps(value)))
    out = bytearray()
    for key, value in fields:
        data = value.encode("utf-8", "replace")[:_MAX_VALUE]
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class _Sink:
    """The last processor: writes the event itself and drops it from structlog's chain."""

    def __init__(self, fmt: str, stream: TextIO) -> None:
        self.fmt = fmt
        self.stream = stream
        self.sock: socket.socket | None = None
        if fmt == "journal":
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> Any:
        if self.sock is not None:
            try:
                self.sock.sendto(encode_journal(event), JOURNAL_SOCKET)
                raise structlog.DropEvent
            except OSError:
                pass  # journald away (restarting): fall back to stderr, which systemd also keeps
        if self.fmt == "console":
            line = f"{time.strftime('%H:%M:%S')} {event.get('level', 'info')[:4]} {human(event)}"
        else:
            line = json.dumps(dict(event), default=str, separators=(",", ":"))
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass
        raise structlog.DropEvent


def _timestamp(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.setdefault("timestamp", round(time.time(), 3))
    return event


def setup(fmt: str | None = None, stream: TextIO | None = None) -> structlog.typing.FilteringBoundLogger:
    """Configure structlog for the agent; returns the root logger."""
    fmt = fmt or default_format()
    if fmt not in ("journal", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r} (allowed: journal, json, console)")
    structlog.configure(
        processors=[structlog.processors.add_log_level, _timestamp, _Sink(fmt, stream or sys.stderr)],
        wrapper_class=structlog.make_filtering_bound_logger(20),  # info and up
        cache_logger_on_first_use=True,
    )
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger()
    return logger
