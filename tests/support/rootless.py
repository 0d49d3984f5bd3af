"""pytest plugin: a real non-root user with its own `systemd --user` manager (rootless podman).

Loaded from tests/conftest.py (``pytest_plugins``). The recipe is the "Rootless" section of
/work/shared/test-host.md: ``useradd -m`` (which adds /etc/subuid and /etc/subgid ranges), a cgroup subtree
``th-NAME.slice/user@UID.service`` chowned to the user, and the manager started with ``setpriv``.

Fixtures
    make_rootless_user   (function) factory: make_rootless_user(subids=True, manager=True) -> RootlessUser
    rootless_images      (session) a docker-archive of the stand-in images, for RootlessUser.load_images()

Teardown (always, also after a failed test): stop the manager (its units and containers go with it),
``podman system reset -f`` as the user, kill what the user still runs (its catatonit pause process,
found by PID: every process whose uid is the user's), remove the cgroup subtree and /run/user/UID, and
``userdel -r``. Names are random (``sq`` + 6 hex), so concurrent sessions never share a user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.testhost import (
    PATH,
    STANDIN_IMAGES,
    SYSTEMD,
    _cgroup_hierarchies,
    _stop_pid,
    build_standin_images,
    remove_cgroup_trees,
    require_testhost,
    require_tool,
    wait_for,
)

LANG = "C.UTF-8"


@dataclass
class RootlessUser:
    name: str
    uid: int
    gid: int
    home: Path
    manager_pid: int = 0
    manager_seconds: float = 0.0
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def runtime_dir(self) -> Path:
        return Path(f"/run/user/{self.uid}")

    @property
    def slice(self) -> str:
        return f"th-{self.name}.slice"

    @property
    def manager_log(self) -> Path:
        return Path(tempfile.gettempdir()) / f"sparc-rootless-{self.name}.log"

    def cgroup_dirs(self) -> list[Path]:
        return [h / self.slice / f"user@{self.uid}.service" for h in _cgroup_hierarchies()]

    def env(self, **extra: str) -> dict[str, str]:
        """A login-like environment: what ssh would give the user on PubApps."""
        return {
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "SHELL": "/bin/bash",
            "PATH": f"{self.home}/.local/bin:{PATH}",
            "LANG": LANG,
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={self.runtime_dir}/bus",
            **extra,
        }

    def argv(self, argv: Sequence[str], **extra: str) -> list[str]:
        """argv run as this user, with a clean environment."""
        env = [f"{k}={v}" for k, v in self.env(**extra).items()]
        return [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--init-groups",
            "env",
            "-i",
            *env,
            *argv,
        ]

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = False,
        timeout: float = 120,
        cwd: str | Path | None = None,
        input: bytes | None = None,
        **extra: str,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.argv(argv, **extra),
            capture_output=True,
            timeout=timeout,
            cwd=str(cwd or self.home),
            input=input,
            check=False,
        )
        done = subprocess.CompletedProcess(
            proc.args,
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"as {self.name}: {' '.join(argv)} exited {done.returncode}\n"
                f"stdout: {done.stdout}\nstderr: {done.stderr}"
            )
        return done

    def systemctl(
        self, *args: str, check: bool = False, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", "--user", "--no-pager", *args], check=check, timeout=timeout)

    def podman(
        self, *args: str, check: bool = False, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return self.run(["podman", *args], check=check, timeout=timeout)

    def journal(self, *matches: str, output: str = "cat") -> str:
        """Journal entries (read as root) of this user's manager and units, e.g. journal("SPARC_EVENT=ready").

        Matched by the manager's slice too: uids are reused by the next test user, slice names are not."""
        argv = ["journalctl", "--no-pager", "-o", output, f"_UID={self.uid}", f"_SYSTEMD_SLICE={self.slice}"]
        done = subprocess.run([*argv, *matches], capture_output=True, text=True, timeout=60, check=False)
        return done.stdout

    def journal_fields(self, *matches: str) -> str:
        return self.journal(*matches, output="export")

    def load_images(self, archive: Path) -> float:
        """`podman load` the stand-in images into the user's own store; returns the seconds it took."""
        t0 = time.monotonic()
        self.run(["podman", "load", "-q", "-i", str(archive)], check=True, timeout=600)
        return time.monotonic() - t0

    def state(self) -> str:
        return self.systemctl("is-system-running", timeout=10).stdout.strip()

    # ------------------------------------------------------------ manager lifecycle (as root)

    def start_manager(self, timeout: float = 30) -> None:
        rt = self.runtime_dir
        rt.mkdir(parents=True, exist_ok=True)
        os.chown(rt, self.uid, self.gid)
        rt.chmod(0o700)
        for cg in self.cgroup_dirs():
            cg.mkdir(parents=True, exist_ok=True)
            for path in [cg, *cg.rglob("*")]:
                with contextlib.suppress(OSError):
                    os.chown(path, self.uid, self.gid)
        procs = " ".join(str(cg / "cgroup.procs") for cg in self.cgroup_dirs())
        inner = " ".join(self.argv([str(SYSTEMD), "--user"]))
        # the shell moves itself into the subtree (as root), then becomes the user's systemd (same PID)
        script = f'for f in {procs}; do echo $$ > "$f"; done; exec {inner}'
        t0 = time.monotonic()
        with open(self.manager_log, "wb") as log:
            self._proc = subprocess.Popen(
                ["/bin/sh", "-c", script],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={"PATH": PATH},
            )
        self.manager_pid = self._proc.pid

        def ready() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"systemd --user exited {self._proc.returncode}")
            return self.state() in ("running", "degraded")

        try:
            wait_for(ready, timeout, what=f"user manager of {self.name}")
        except (RuntimeError, TimeoutError) as exc:
            text = self.manager_log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"user manager of {self.name} did not start: {exc}\n{text}") from exc
        self.manager_seconds = time.monotonic() - t0


def _user_pids(uid: int) -> list[int]:
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in status.read_text().splitlines():
                if line.startswith("Uid:"):
                    if int(line.split()[1]) == uid:
                        pids.append(int(status.parent.name))
                    break
    return pids


def _teardown(user: RootlessUser) -> list[str]:
    problems: list[str] = []
    if user.manager_pid and _stop_pid(user.manager_pid, 60):
        problems.append(f"manager of {user.name} (pid {user.manager_pid}) needed SIGKILL")
    if user._proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            user._proc.wait(5)
    # containers, images and storage of the user (vfs/overlay layers are owned by sub-uids)
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        user.run(["podman", "system", "reset", "-f"], timeout=180)
    # what the user still runs: the catatonit pause process, slirp4netns, a stray conmon ...
    for pid in _user_pids(user.uid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        wait_for(lambda: not _user_pids(user.uid), 10, what=f"processes of {user.name} gone")
    tops = {h / user.slice for h in _cgroup_hierarchies()}
    tops |= {h / user.slice for h in Path("/sys/fs/cgroup").iterdir() if (h / user.slice).is_dir()}
    remove_cgroup_trees(sorted(tops))
    shutil.rmtree(user.runtime_dir, ignore_errors=True)
    Path(f"/var/lib/systemd/linger/{user.name}").unlink(missing_ok=True)
    done = subprocess.run(["userdel", "-r", user.name], capture_output=True, text=True, check=False)
    if done.returncode not in (0, 12):  # 12: could not remove the home dir (mail spool missing is fine)
        problems.append(f"userdel -r {user.name}: {done.returncode} {done.stderr.strip()}")
    shutil.rmtree(user.home, ignore_errors=True)
    for f in ("/etc/subuid", "/etc/subgid"):
        if any(line.startswith(f"{user.name}:") for line in Path(f).read_text().splitlines()):
            problems.append(f"{f} still names {user.name}")
    user.manager_log.unlink(missing_ok=True)
    return problems


@pytest.fixture
def make_rootless_user(journald: Path) -> Iterator[Callable[..., RootlessUser]]:
    """Factory: a fresh non-root user; with `manager=True` its own systemd --user is running.
    journald too: its containers log there (LogDriver=journald), and podman run fails without it."""
    require_testhost()
    require_tool("useradd", "the passwd package")
    require_tool("setpriv", "util-linux")
    made: list[RootlessUser] = []

    def make(subids: bool = True, manager: bool = True) -> RootlessUser:
        name = f"sq{os.urandom(3).hex()}"
        argv = ["useradd", "-m", "-s", "/bin/bash", "-K", "UMASK=022"]
        if not subids:  # as if the admin's useradd gave no subordinate ranges (e.g. an LDAP user)
            argv += ["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"]
        subprocess.run([*argv, name], check=True, capture_output=True, timeout=60)
        entry = pwd.getpwnam(name)
        user = RootlessUser(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))
        made.append(user)
        if manager:
            user.start_manager()
        return user

    try:
        yield make
    finally:
        problems: list[str] = []
        for user in made:
            with contextlib.suppress(OSError):
                log = user.manager_log.read_text(errors="replace")[-3000:]
                print(f"--- manager log of {user.name} ---\n{log}")
            problems += _teardown(user)
        if problems:
            pytest.fail("rootless teardown: " + "; ".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def rootless_images() -> Iterator[Path]:
    """The stand-in images saved once per session into a docker-archive any user can `podman load`."""
    require_testhost()
    build_standin_images()
    d = Path(tempfile.mkdtemp(prefix="sparc-rl-img-"))
    d.chmod(0o755)
    archive = d / "standins.tar"
    refs = [ref for key, ref in STANDIN_IMAGES.items() if key not in ("bb", "py")]
    subprocess.run(
        ["podman", "save", "-q", "-m", "-o", str(archive), *refs],
        check=True,
        capture_output=True,
        timeout=600,
    )
    archive.chmod(0o644)
    try:
        yield archive
    finally:
        shutil.rmtree(d, ignore_errors=True)
