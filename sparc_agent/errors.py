"""The project's exceptions: one base class, each carrying the CLI exit code it maps to.

Modules raise these (never library exceptions) so that the CLI can print one clear line and exit
with a stable code, and so that callers can catch a whole family at once.
"""

from __future__ import annotations


class SparcError(Exception):
    """Base of every error sparc-agent raises on purpose; `exit_code` is what the CLI exits with."""

    exit_code: int = 1


class EnvironmentProblem(SparcError):
    """The machine is not set up the way we need (no user manager, missing tools, ...)."""

    exit_code = 3


# ---------------------------------------------------------------- systemd (sparc_agent/systemd.py)


class SystemdError(SparcError):
    """systemd refused or failed something we asked of it over D-Bus."""


class NoUserManager(EnvironmentProblem):
    """The systemd user manager cannot be reached on its bus."""

    def __init__(self, address: str, detail: str = "") -> None:
        self.address = address
        self.detail = detail
        msg = (
            f"cannot reach the systemd user manager at {address}: is it running? "
            "on PubApps try `loginctl enable-linger $USER`"
        )
        super().__init__(f"{msg} ({detail})" if detail else msg)


class ManagerDisconnected(SystemdError):
    """The bus connection to the user manager was lost (manager exited or restarted): reconnect."""


class UnitNotFound(SystemdError):
    """systemd knows no unit of that name (no unit file, or not loaded after a reload)."""

    def __init__(self, unit: str, detail: str = "") -> None:
        self.unit = unit
        msg = f"unit {unit} not found"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class UnitLoadError(SystemdError):
    """The unit exists but cannot be used: masked, a bad setting, or a unit file that failed to load."""

    def __init__(self, unit: str, detail: str = "") -> None:
        self.unit = unit
        msg = f"unit {unit} cannot be loaded"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class AccessDenied(SystemdError):
    """The manager refused the call (polkit/SELinux, or a unit that may not be started by hand)."""


class JobFailed(SystemdError):
    """A start/stop/restart job ended with a result other than "done"."""

    def __init__(self, unit: str, verb: str, result: str, hint: str = "") -> None:
        self.unit = unit
        self.verb = verb
        # systemd's job result: failed, timeout, dependency, canceled, skipped, invalid, ...
        self.result = result
        msg = f"{verb} {unit}: job {result}"
        super().__init__(f"{msg} ({hint})" if hint else msg)


class JobWaitTimeout(SystemdError):
    """We stopped waiting for a job; it may still be running inside systemd."""

    def __init__(self, unit: str, verb: str, job: str, timeout: float) -> None:
        self.unit = unit
        self.verb = verb
        self.job = job
        self.timeout = timeout
        super().__init__(f"{verb} {unit}: no job result after {timeout:g} s (job {job} may still be running)")


# ---------------------------------------------------------------- input (profile, flags)


class InvalidInput(SparcError):
    """The profile or the command line is wrong; nothing was changed."""

    exit_code = 2
