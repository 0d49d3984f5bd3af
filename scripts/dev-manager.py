#!/usr/bin/env python3
"""A systemd user manager for machines that have none (containers and CI images whose PID 1 is not systemd).

    dev-manager.py start NAME   start journald if needed and a private `systemd --user` in its own cgroup
                                subtree; print the shell exports that point sparc-agent/systemctl at it
    dev-manager.py stop NAME    stop it (its units and containers stop with it) and remove its directories

On a real machine (PubApps) the login session already has a user manager: do not use this.
Built on the test host's helpers (tests/support/testhost.py), so the tests and this script start
managers alike.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import support.testhost as testhost

STATE = Path("/run/sparc-dev-managers")


def ensure_journald() -> None:
    """A journald of our own, left running: the stack logs to it (LogDriver=journald) after we exit.

    Not registered with the test plugin's journald sharing, so no test session ever stops it.
    """
    if testhost._journal_alive():
        return
    Path("/run/systemd/system").mkdir(parents=True, exist_ok=True)
    testhost.JOURNAL_SOCKET.unlink(missing_ok=True)
    subprocess.Popen(
        [str(testhost.JOURNALD)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    testhost.wait_for(testhost._journal_alive, 10, what="journald socket")
    if not os.path.lexists("/dev/log"):
        os.symlink("/run/systemd/journal/dev-log", "/dev/log")


def start(name: str) -> None:
    info = STATE / f"{name}.json"
    if info.exists() and testhost._pid_alive(json.loads(info.read_text())["pid"]):
        env = json.loads(info.read_text())["env"]
    else:
        ensure_journald()
        mgr = testhost._new_manager(STATE / name, name)
        testhost._launch_manager(mgr, None)
        STATE.mkdir(parents=True, exist_ok=True)
        info.write_text(json.dumps({"pid": mgr.pid, "env": mgr.env, "root": str(mgr.root)}))
        env = mgr.env
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")


def stop(name: str) -> None:
    info = STATE / f"{name}.json"
    if not info.exists():
        return
    data = json.loads(info.read_text())
    mgr = testhost.UserManager(name=name, root=Path(data["root"]), env=data["env"], pid=data["pid"])
    problems = testhost.stop_manager(mgr)
    subprocess.run(["rm", "-rf", data["root"], str(info)], check=False)
    for problem in problems:
        print(problem, file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit(__doc__)
    {"start": start, "stop": stop}[sys.argv[1]](sys.argv[2])
