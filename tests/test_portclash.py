"""Naming a taken port: podman's log line parsed, ss's answer parsed, the publisher found (pure)."""

from __future__ import annotations

import os
import socket

from sparc_agent.apply.portclash import bind_clash, describe
from sparc_agent.host.sockets import holders_in_ss, port_holders
from sparc_agent.profile.model import Profile
from sparc_agent.profile.rules import port_publisher, port_publishers

PROFILE = Profile.model_validate(
    {
        "apiVersion": "sparc-agent/v1",
        "name": "demo",
        "pod": {"ports": ["18000:8000", "127.0.0.1:13478:3478/udp", "19000-19001:9000-9001"]},
        "services": {
            "mas": {"image": "localhost/mas", "health": {"http": {"port": 18000, "path": "/"}}},
            "turn": {"image": "localhost/turn", "health": {"stun": {"port": 13478}}},
            "other": {"image": "localhost/other"},
        },
    }
)


def test_bind_clash_reads_podmans_rootlessport_line() -> None:
    log = (
        "Starting demo-pod.service...\n"
        "Error: rootlessport listen tcp 127.0.0.1:18000: bind: address already in use\n"
        "demo-pod.service: Failed with result 'exit-code'.\n"
    )
    assert bind_clash(log) == ("tcp", "127.0.0.1", 18000)
    assert bind_clash("listen udp4 :13478: bind: address already in use") == ("udp", "*", 13478)
    assert bind_clash("listen tcp6 [::1]:18000: bind: address already in use") == ("tcp", "::1", 18000)
    assert bind_clash("Error: no such image") is None
    assert bind_clash("listen tcp 127.0.0.1:18000: bind: permission denied") is None


def test_holders_in_ss() -> None:
    out = (
        'tcp LISTEN 0 128 127.0.0.1:18000 0.0.0.0:* users:(("python3",pid=4242,fd=3),'
        '("python3",pid=4242,fd=7))\n'
        'tcp LISTEN 0 128 127.0.0.1:18000 0.0.0.0:* users:(("nginx",pid=7,fd=6))\n'
    )
    assert holders_in_ss(out) == ["python3 (pid 4242)", "nginx (pid 7)"]
    assert holders_in_ss("tcp LISTEN 0 128 127.0.0.1:18000 0.0.0.0:*\n") == []


def test_port_publisher_names_the_probed_service_and_entry() -> None:
    assert port_publisher(PROFILE, "tcp", 18000) == "service mas, pod.ports[0] -> container port 8000/tcp"
    assert port_publisher(PROFILE, "udp", 13478) == "service turn, pod.ports[1] -> container port 3478/udp"
    assert port_publisher(PROFILE, "tcp", 19001) == (
        "the pod (no service probes it), pod.ports[2] -> container port 9001/tcp"
    )
    assert port_publisher(PROFILE, "udp", 18000) == "not in pod.ports"


def test_port_publishers_is_the_table_of_every_published_port() -> None:
    """What apply records in the generation's plan for the agent, which has no profile model."""
    table = port_publishers(PROFILE)
    assert sorted(table) == ["13478/udp", "18000/tcp", "19000/tcp", "19001/tcp"]
    for key, text in table.items():
        port, protocol = key.split("/")
        assert text == port_publisher(PROFILE, protocol, int(port))


def test_describe_says_port_protocol_service_holder() -> None:
    publishers = port_publishers(PROFILE)
    text = describe(publishers, "tcp", "127.0.0.1", 18000, ["python3 (pid 4242)"])
    assert "127.0.0.1:18000/tcp is already in use (held by python3 (pid 4242))" in text
    assert "service mas, pod.ports[0]" in text
    udp = describe(publishers, "udp", "127.0.0.1", 13478, [])
    assert "13478/udp" in udp and "service turn, pod.ports[1]" in udp and "not visible" in udp


def test_port_holders_finds_this_process() -> None:
    """Real `ss` against a socket this test holds (and closes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert any(f"(pid {os.getpid()})" in h for h in port_holders("tcp", port))
    assert port_holders("tcp", port) == []
