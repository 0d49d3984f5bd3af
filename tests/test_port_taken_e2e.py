"""A published port already taken by another process (issue 12 item 4): apply names the port, the
protocol, the service that publishes it and the holder, instead of blaming the service whose start
job failed only because the pod (its dependency) could not bind."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from support.stackfiles import sparc, write_profile
from support.testhost import BB_IMAGE, UserManager, free_port

pytestmark = [pytest.mark.e2e]


def test_apply_names_the_taken_port_its_service_and_holder(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr, port = user_manager, free_port()
    doc = {
        "apiVersion": "sparc-agent/v1",
        "name": mgr.name,
        "pod": {"ports": [f"{port}:8000"]},
        "services": {
            "web": {
                "image": BB_IMAGE,
                "command": ["httpd", "-f", "-p", "8000", "-h", "/"],
                "health": {"http": {"port": port, "path": "/"}, "interval": "1s"},
            },
        },
    }
    profile = write_profile(doc, tmp_path / "p.yaml")
    with socket.socket() as held:  # closed at the end, also on failure
        held.bind(("127.0.0.1", port))
        held.listen()
        done = sparc(mgr, "apply", str(profile))
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert f"127.0.0.1:{port}/tcp is already in use" in out, out
    assert f"(pid {os.getpid()})" in out, out  # the holder: this test
    assert "service web, pod.ports[0]" in out, out
    assert f"{mgr.name}-pod.service did not start" in out, out
