"""Profiles for end-to-end tests: the SPARC avatar stack on free ports, named after the test's manager."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from support.testhost import UserManager, free_port

SPARC_AGENT = [sys.executable, "-m", "sparc_agent.cli.main"]


def avatar_profile(mgr: UserManager, tmp: Path, **service_overrides: dict[str, Any]) -> dict[str, Any]:
    """examples/sparc-avatar.yaml with this test's stack name and free host ports."""
    ports = {"mas": free_port(), "sig": free_port(), "riva": free_port(), "turn": free_port("udp")}
    key = tmp / "openai.key"
    key.write_text("sk-test-not-a-real-key\n")
    services: dict[str, Any] = {
        "riva": {
            "image": "nvcr.io/nvidia/riva/riva-speech:2.16.0-server",
            "gpus": "all",
            "volumes": ["riva-models:/data"],
            "health": {"grpc": {"port": ports["riva"]}, "start_period": "20s", "interval": "1s"},
        },
        "mas": {
            "image": "localhost/sparc/mas-server:latest",
            "env": {"RIVA_API_URL": "localhost:50051"},
            "secrets": {"OPENAI_API_KEY": "openai-api-key"},
            "depends_on": {"riva": "healthy"},
            "health": {"http": {"port": ports["mas"], "path": "/health"}, "interval": "1s"},
        },
        "signaling": {
            "image": "localhost/sparc/signaling-server:latest",
            "command": ["node", "build/index.js", "-p", "8080"],
            "env": {"PUBLIC_HOST": "localhost"},
            "health": {"websocket": {"port": ports["sig"]}, "interval": "1s", "timeout": "1s", "retries": 2},
        },
        "turn": {
            "image": "docker.io/coturn/coturn:4.6",
            "command": ["-n", "--listening-port=3478", "--no-cli"],
            "health": {"stun": {"port": ports["turn"]}, "interval": "1s"},
        },
        "unity": {
            "image": "localhost/sparc/unity-server:latest",
            "gpus": "all",
            "env": {"SIGNALING_URL": "ws://localhost:8080"},
            "depends_on": {"signaling": "healthy", "turn": "healthy", "mas": "started"},
            "health": {"exec": {"command": ["pgrep", "-f", "SPARC-P.x86_64"]}, "interval": "1s"},
            "restart": {"policy": "always"},
        },
    }
    for name, override in service_overrides.items():
        services[name] = {**services.get(name, {}), **override}
    return {
        "apiVersion": "sparc-agent/v1",
        "name": mgr.name,
        "pod": {
            "ports": [
                f"{ports['mas']}:8000",
                f"{ports['sig']}:8080",
                f"{ports['riva']}:50051",
                f"{ports['turn']}:3478/udp",
            ]
        },
        "volumes": {"riva-models": {}},
        "secrets": {"openai-api-key": {"file": str(key)}},
        "services": services,
    }


def write_profile(doc: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def sparc(
    mgr: UserManager, *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI against this manager (its bus, its XDG dirs), as a user would.

    A manager with a `sparc_command` (trixiehost.TrixieManager) says how to run the CLI where it lives."""
    command = getattr(mgr, "sparc_command", None)
    argv = command(*args) if command is not None else [*SPARC_AGENT, *args]
    return subprocess.run(
        argv, env=mgr.environ(**(env or {})), capture_output=True, text=True, timeout=timeout
    )


def status(mgr: UserManager, stack: str) -> dict[str, Any]:
    done = sparc(mgr, "status", stack, "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def unit_props(mgr: UserManager, unit: str) -> dict[str, str]:
    out = mgr.systemctl("show", unit, "-p", "MainPID,NRestarts,ActiveState,SubState,InvocationID").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
