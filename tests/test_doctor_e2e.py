"""`sparc-agent doctor` on the test host, as non-root users: break one thing at a time, check the finding
and its fix hint.

The CLI runs as the user from this checkout: the system python (3.11, like the venv's) with the venv's
site-packages on PYTHONPATH, because /work/venv's interpreter lives under /root, which users cannot read.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.rootless import RootlessUser
from support.testhost import REPO, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SITE = sysconfig.get_paths()["purelib"]
# what the `sparc-agent` console script runs
ENTRY_POINT = "import sys; sys.argv[0] = 'sparc-agent'; from sparc_agent.cli import main; sys.exit(main())"


def doctor(user: RootlessUser, *args: str, **env: str) -> tuple[int, dict[str, dict[str, str]]]:
    done = user.run(
        ["/usr/bin/python3", "-c", ENTRY_POINT, "doctor", "--json", *args],
        timeout=120,
        cwd="/",
        PYTHONPATH=f"{REPO}:{SITE}",
        **env,
    )
    assert done.stdout, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["exit_code"] == done.returncode
    return done.returncode, {c["name"]: c for c in report["checks"]}


@pytest.fixture(autouse=True)
def _tun() -> None:
    if stat.S_IMODE(os.stat("/dev/net/tun").st_mode) != 0o666:  # the rootless recipe of the test host
        os.chmod("/dev/net/tun", 0o666)


def test_healthy_rootless_user(make_rootless_user: Any) -> None:
    user = make_rootless_user()
    rc, checks = doctor(user)
    assert not [c for c in checks.values() if c["status"] == "fail"], checks
    assert rc == 1  # warnings only: podman 4.3 fallbacks, no logind (linger unknown), hybrid cgroups
    assert checks["subuid"]["status"] == "ok" and f"{user.name}: 100000+65536" in checks["subuid"]["message"]
    assert checks["user-manager"]["status"] == "ok"
    assert f"/run/user/{user.uid}/bus" in checks["user-manager"]["message"]
    assert checks["quadlet"]["status"] == "ok" and ".pod" in checks["quadlet"]["message"]
    assert checks["tun"]["status"] == "ok"
    assert "--cgroups=enabled" in checks["cgroups"]["message"]  # what the renderer does about it
    assert checks["linger"]["status"] == "warn" and f"enable-linger {user.name}" in checks["linger"]["hint"]
    assert str(user.home / ".local/share/containers/storage") in checks["disk"]["message"]


def test_no_subuid_entry(make_rootless_user: Any) -> None:
    user = make_rootless_user(subids=False, manager=False)
    assert not any(line.startswith(f"{user.name}:") for line in Path("/etc/subuid").read_text().splitlines())
    rc, checks = doctor(user)
    assert rc == 3
    for kind in ("uid", "gid"):
        check = checks[f"sub{kind}"]
        assert check["status"] == "fail", check
        assert f"no /etc/sub{kind} entry for {user.name}" in check["message"]
        assert f"usermod --add-sub{kind}s 100000-165535 {user.name}" in check["hint"]
        assert "podman system migrate" in check["hint"]
    # without a manager: the D-Bus check fails and says how to get one
    assert checks["user-manager"]["status"] == "fail"
    assert "enable-linger" in checks["user-manager"]["hint"]


def test_port_taken(make_rootless_user: Any, tmp_path: Path) -> None:
    user = make_rootless_user(manager=False)
    taken, free, udp = free_port(), free_port(), free_port("udp")
    doc = {
        "apiVersion": "sparc-agent/v1",
        "name": user.name,
        "pod": {"ports": [f"{taken}:8000", f"{free}:8080", f"{udp}:3478/udp", "80:80"]},
        "services": {"web": {"image": "localhost/none-such:1", "health": {"tcp": {"port": taken}}}},
    }
    profile = user.home / "p.yaml"
    profile.write_text(yaml.safe_dump(doc))
    os.chown(profile, user.uid, user.gid)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        rc, checks = doctor(user, str(profile))
    assert rc == 3
    ports = checks["ports"]
    assert ports["status"] == "fail"
    assert f"in use: 127.0.0.1:{taken}/tcp" in ports["message"]
    assert str(free) not in ports["message"] and str(udp) not in ports["message"]
    assert "127.0.0.1:80/tcp (below 1024" in ports["message"]  # a user cannot bind it either
    assert f"ss -lntup 'sport = :{taken}'" in ports["hint"] and "pod.ports" in ports["hint"]
    assert checks["profile"]["status"] == "ok"
    assert checks["images"]["status"] == "warn" and "localhost/none-such:1" in checks["images"]["message"]
    assert checks["gpu-cdi"]["status"] == "ok" and "asks for no GPUs" in checks["gpu-cdi"]["message"]
    # the port freed: the same profile passes the ports check
    _, again = doctor(user, str(profile))
    assert f"{taken}/tcp" not in again["ports"]["message"]


def test_no_quadlet_generator(make_rootless_user: Any) -> None:
    user = make_rootless_user(manager=False)
    _, checks = doctor(user, SPARC_QUADLET="/opt/nowhere/quadlet")
    check = checks["quadlet"]
    assert check["status"] == "fail", check
    assert check["message"] == "no quadlet generator (looked for /opt/nowhere/quadlet)"
    assert "podman >= 4.4" in check["hint"] and "/usr/libexec/podman/quadlet" in check["hint"]
    # the binary is there but no user generator runs it
    _, checks = doctor(user, SPARC_USER_GENERATOR_DIRS="/opt/nowhere")
    check = checks["quadlet"]
    assert check["status"] == "fail" and "no user generator runs it" in check["message"], check
    assert (
        "ln -s /usr/libexec/podman/quadlet /usr/lib/systemd/user-generators/podman-user-generator"
        in check["hint"]
    )
    # no podman on PATH at all
    _, checks = doctor(user, PATH="/usr/local/nowhere:/bin/nowhere")
    assert checks["podman"]["status"] == "fail" and "podman not found on PATH" in checks["podman"]["message"]
    assert "install podman >= 4.4" in checks["podman"]["hint"]
