"""sd_notify(3) without a dependency: one datagram to $NOTIFY_SOCKET per message.

READY=1 after adoption, WATCHDOG=1 at half of WatchdogSec, STATUS= one-liners. Outside systemd
(no NOTIFY_SOCKET) every call is a cheap no-op.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        # '@' is the abstract namespace (a leading NUL byte)
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._sock: socket.socket | None = None
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, **fields: str) -> bool:
        """notify(READY="1", STATUS="...") -> True if sent."""
        if not self.address:
            return False
        msg = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(msg, self.address)
        except OSError:
            return False  # systemd gone or not listening: nothing we can do about it here
        return True

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send(READY="1", STATUS=status)

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self.send(STATUS=status)

    def watchdog(self) -> None:
        self.send(WATCHDOG="1")

    def extend_start(self, seconds: float, status: str) -> None:
        """Before READY: ask systemd for `seconds` more of start-up time (systemd >= 236)."""
        self._last_status = status
        self.send(EXTEND_TIMEOUT_USEC=str(int(seconds * 1_000_000)), STATUS=status)

    def stopping(self) -> None:
        self.send(STOPPING="1")

    def reloading(self) -> None:
        self.send(RELOADING="1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
