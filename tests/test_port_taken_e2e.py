"""A published port already taken by another process (issue 12 item 4): apply names the port, the
protocol, the service that publishes it and the holder, instead of blaming the service whose start
job failed only because the pod (its dependency) could not bind. On both hosts (apply_host: podman
4.3 and podman 5.4), for a TCP port (the API) and a UDP one (TURN's 3478/udp)."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
from support.stackfiles import sparc, write_profile
from support.testhost import BB_IMAGE, free_port
from support.trixiehost import ApplyHost

pytestmark = [pytest.mark.e2e]


def service(protocol: str, port: int) -> dict[str, Any]:
    """A service that publishes container port 8000/tcp (a web server) or 3478/udp (coturn)."""
    if protocol == "tcp":
        return {
            "image": BB_IMAGE,
            "command": ["httpd", "-f", "-p", "8000", "-h", "/"],
            "health": {"http": {"port": port, "path": "/"}, "interval": "1s"},
        }
    return {
        "image": "docker.io/coturn/coturn:4.6",
        "command": ["-n", "--listening-port=3478", "--no-cli"],
        "health": {"stun": {"port": port}, "interval": "1s"},
    }


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_apply_names_the_taken_port_its_service_and_holder(apply_host: ApplyHost, protocol: str) -> None:
    mgr, port = apply_host.mgr, free_port(protocol)
    container = "8000" if protocol == "tcp" else "3478/udp"
    doc = {
        "apiVersion": "sparc-agent/v1",
        "name": mgr.name,
        "pod": {"ports": [f"{port}:{container}"]},
        "services": {"web": service(protocol, port)},
    }
    profile = write_profile(doc, apply_host.tmp / "p.yaml")
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as held:  # closed at the end, also on failure
        held.bind(("127.0.0.1", port))
        if protocol == "tcp":
            held.listen()
        done = sparc(mgr, "apply", str(profile))
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert f"127.0.0.1:{port}/{protocol} is already in use" in out, out
    assert f"(pid {os.getpid()})" in out, out  # the holder, this test, as `ss` shows it (on both hosts)
    assert f"service web, pod.ports[0] -> container port {container.split('/')[0]}/{protocol}" in out, out
    assert f"{mgr.name}-pod.service did not start" in out, out
