"""doctor's checks on a fake file tree (Host(root=...)): parsing, statuses, exit codes. No host needed."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sparc_agent import doctor
from sparc_agent.doctor import Check, Host, Report

pytestmark = pytest.mark.unit


def host(tmp_path: Path, uid: int = 1000, user: str = "alice", **env: str) -> Host:
    h = Host({"PATH": str(tmp_path / "bin"), "HOME": str(tmp_path / "home"), **env}, root=tmp_path)
    h.uid, h.user = uid, user
    return h


def write(tmp_path: Path, rel: str, text: str) -> None:
    p = tmp_path / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_exit_codes_follow_the_worst_finding() -> None:
    assert Report([Check("a", "ok", "")]).exit_code == 0
    assert Report([Check("a", "ok", ""), Check("b", "warn", "", "x")]).exit_code == 1
    assert Report([Check("a", "warn", "", "x"), Check("b", "fail", "", "y")]).exit_code == 3
    text = Report([Check("a", "fail", "broken", "do this")]).format()
    assert "fail  a  broken" in text and "fix: do this" in text and "1 blocking problems" in text


def test_subuid_from_file(tmp_path: Path) -> None:
    write(tmp_path, "/etc/subuid", "bob:100000:65536\n1000:165536:65536\n")
    write(tmp_path, "/etc/subgid", "bob:100000:65536\n")
    h = host(tmp_path)
    uid = doctor.check_subuid(h)
    assert uid.status == "ok" and "165536+65536" in uid.message  # matched by uid, not only by name
    gid = doctor.check_subgid(h)
    assert gid.status == "fail" and "usermod --add-subgids 100000-165535 alice" in gid.hint
    assert doctor.check_subuid(host(tmp_path, uid=0, user="root")).status == "ok"


def test_subuid_too_few(tmp_path: Path) -> None:
    write(tmp_path, "/etc/subuid", "alice:100000:1000\n")
    check = doctor.check_subuid(host(tmp_path))
    assert check.status == "warn" and "only 1000" in check.message


def test_cdi_spec_files(tmp_path: Path) -> None:
    write(
        tmp_path,
        "/etc/cdi/nvidia.yaml",
        'cdiVersion: "0.5.0"\nkind: nvidia.com/gpu\ndevices:\n  - name: "0"\n  - name: all\n',
    )
    write(tmp_path, "/var/run/cdi/other.json", '{"kind": "example.com/fpga", "devices": [{"name": "x"}]}')
    check = doctor.check_cdi(host(tmp_path), None)
    assert check.status == "ok" and "nvidia.com/gpu=0, nvidia.com/gpu=all" in check.message
    assert "/etc/cdi/nvidia.yaml" in check.message


def test_no_cdi_spec(tmp_path: Path) -> None:
    check = doctor.check_cdi(host(tmp_path), None)
    assert check.status == "warn" and "nvidia-ctk cdi generate" in check.hint


def test_linger_file(tmp_path: Path) -> None:
    write(tmp_path, "/var/lib/systemd/linger/alice", "")
    assert doctor.check_linger(host(tmp_path)).status == "ok"
    check = doctor.check_linger(host(tmp_path, user="bob"))  # no loginctl on this PATH either
    assert check.status == "warn" and "loginctl enable-linger bob" in check.hint


def test_cgroup_v2_delegation(tmp_path: Path) -> None:
    write(tmp_path, "/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids\n")
    me = "/user.slice/user-1000.slice/user@1000.service"
    write(tmp_path, "/proc/self/cgroup", f"0::{me}/app.slice/x.scope\n")
    write(tmp_path, f"/sys/fs/cgroup{me}/cgroup.controllers", "memory pids\n")
    check = doctor.check_cgroups(host(tmp_path))
    assert check.status == "warn" and "not delegated to you: cpu" in check.message
    write(tmp_path, f"/sys/fs/cgroup{me}/cgroup.controllers", "cpu memory pids\n")
    assert doctor.check_cgroups(host(tmp_path)).status == "ok"


def test_hybrid_cgroups_rootless(tmp_path: Path) -> None:
    (tmp_path / "sys/fs/cgroup/unified").mkdir(parents=True)
    check = doctor.check_cgroups(host(tmp_path))
    assert check.status == "warn" and "--cgroups=enabled" in check.message


def test_missing_tun(tmp_path: Path) -> None:
    check = doctor.check_tun(host(tmp_path))
    assert check.status == "fail" and "modprobe tun" in check.hint


def test_port_in_use() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert doctor.port_in_use("127.0.0.1", port, "tcp") == "in use"
    assert doctor.port_in_use("127.0.0.1", port, "tcp") is None
    assert doctor.port_in_use("192.0.2.1", port, "tcp") == "192.0.2.1 is not an address of this machine"


def test_quadlet_missing(tmp_path: Path) -> None:
    check = doctor.check_quadlet(host(tmp_path, SPARC_QUADLET="/nope/quadlet"))
    assert check.status == "fail" and check.message == "no quadlet generator (looked for /nope/quadlet)"


def test_image_names_compare_normalized() -> None:
    assert doctor._normal("coturn/coturn:4.6") == "docker.io/coturn/coturn:4.6"
    assert doctor._normal("busybox") == "docker.io/library/busybox:latest"
    assert doctor._normal("localhost/sparc/mas-server:latest") == "localhost/sparc/mas-server:latest"
    assert doctor._normal("127.0.0.1:5000/x") == "127.0.0.1:5000/x:latest"


def test_ports_check_names_the_publishing_service_and_holder(tmp_path: Path) -> None:
    """A real socket this test holds (and closes): doctor names who publishes the port and who holds it."""
    import os

    from sparc_agent.profile.model import Profile

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        profile = Profile.model_validate(
            {
                "apiVersion": "sparc-agent/v1",
                "name": "demo",
                "pod": {"ports": [f"{port}:8000"]},
                "services": {
                    "mas": {"image": "localhost/mas", "health": {"http": {"port": port, "path": "/"}}}
                },
            }
        )
        check = doctor.check_ports(host(tmp_path), profile)
    assert check.status == "fail", check
    assert f"127.0.0.1:{port}/tcp" in check.message and "service mas, pod.ports[0]" in check.message, check
    assert f"(pid {os.getpid()})" in check.message, check
