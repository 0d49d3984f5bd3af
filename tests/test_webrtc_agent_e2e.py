"""`sparc-agent run` with a webrtc probe on the renderer of a real stack: the real user manager and
quadlets, the URS signaling stand-in, Debian's coturn (use-auth-secret, its secret in a 0600 config
file) and the aiortc renderer as images in one pod. The agent probes from the host as a browser
would: published signaling and TURN ports, relay-only ICE, the first decoded frame.

Healthy: the webrtc verdicts keep the renderer HEALTHY (and its RSS stays small: aiortc runs in the
session child). A renderer that sends no frames: UNHEALTHY at first_frame, restarted by its policy.
A probe with the wrong TURN secret: UNHEALTHY at ice_gather, pointing at turn, never restarted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from support.stackfiles import avatar_profile, sparc, write_profile
from support.testhost import UserManager, wait_for
from test_agent_e2e import agent, all_healthy, wait_states

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def media_stack(mgr: UserManager, tmp: Path, images: dict[str, str], mode: str, probe_secret: str) -> int:
    """Apply the stack; returns the signaling host port."""
    doc = avatar_profile(mgr, tmp)
    sig = int(doc["pod"]["ports"][1].split(":")[0])
    turn = int(doc["pod"]["ports"][3].split(":")[0].split("/")[0])
    conf = tmp / "turn-secret.conf"
    conf.write_text("static-auth-secret=the-turn-secret\n")
    probe_key = tmp / "probe-secret.conf"  # the same file in a real stack; two here to fake a wrong one
    probe_key.write_text(f"static-auth-secret={probe_secret}\n")
    for path in (conf, probe_key):
        path.chmod(0o644)  # the container's turnserver runs as another uid of the user namespace
    doc["secrets"]["turn-secret"] = {"file": str(probe_key)}
    services = doc["services"]
    services["turn"] = {
        "image": images["turn"],
        "command": [
            "-c", "/run/sparc/turn-secret.conf", "--use-auth-secret", "--realm=sparc",
            "--listening-port=3478", "--min-port=49152", "--max-port=49200", "--no-tcp-relay",
            "--no-multicast-peers", "--no-cli", "--no-tls", "--no-dtls", "--log-file=stdout",
        ],
        "volumes": [f"{conf}:/run/sparc/turn-secret.conf:ro"],
        "health": {"stun": {"port": turn}, "interval": "1s"},
    }  # fmt: skip
    services["unity"] = {
        "image": images["renderer"],
        "command": ["/opt/sparc/SPARC-P.x86_64", "-signalingUrl", "ws://127.0.0.1:8080", "--mode", mode],
        "depends_on": {"signaling": "healthy", "turn": "healthy"},
        "health": {
            "exec": {"command": ["pgrep", "-f", "SPARC-P.x86_64"]},
            "interval": "1s",
            "webrtc": {
                "port": sig,
                "turn_port": turn,
                "signaling_service": "signaling",
                "turn_service": "turn",
                "turn_secret": "turn-secret",
                "interval": "2s",
                "timeout": "15s",
                "frame_timeout": "3s",
            },
        },
        "restart": {"policy": "always", "backoff": {"initial": "500ms", "max": "2s"}},
    }
    done = sparc(mgr, "apply", str(write_profile(doc, tmp / "p.yaml")))
    assert done.returncode == 0, done.stdout + done.stderr
    return sig


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def test_healthy_media_keeps_the_renderer_healthy_and_the_agent_small(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    media_stack(mgr, tmp_path, standin_images, "answer", "the-turn-secret")
    now = sparc(mgr, "probe", mgr.name, "unity", "--json")
    records = {json.loads(line)["kind"]: json.loads(line) for line in now.stdout.splitlines()}
    assert now.returncode == 0 and records["webrtc"]["ok"], now.stdout + now.stderr
    print(f"probe now: {json.dumps(records['webrtc'])}")
    with agent(mgr, "--no-apply") as a:
        wait_states(mgr, all_healthy, 60, "all HEALTHY")
        time.sleep(7)  # three webrtc runs at a 2 s interval
        assert not a.find(event="state", service="unity", state="UNHEALTHY"), a.log()
        hwm = vm_hwm_mb(a.proc.pid)
        print(f"agent with a webrtc probe, after >= 3 sessions: VmHWM {hwm:.1f} MB")
        assert hwm <= 50, hwm


def unity_unhealthy(a: Any) -> dict[str, Any]:
    wait_for(lambda: a.find(event="state", service="unity", state="UNHEALTHY"), 60, what="unity UNHEALTHY")
    event: dict[str, Any] = a.find(event="state", service="unity", state="UNHEALTHY")[0]
    return event


def test_a_renderer_without_frames_is_unhealthy_at_first_frame_and_restarted(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    media_stack(mgr, tmp_path, standin_images, "no-frames", "the-turn-secret")
    with agent(mgr, "--no-apply") as a:
        event = unity_unhealthy(a)
        assert "first_frame" in event["reason"] and "cause:" not in event["reason"], event
        wait_for(lambda: a.find(event="restart", service="unity", by="agent"), 30, what="unity restarted")
        assert not a.find(event="restart", service="turn", by="agent"), a.log()


def test_a_wrong_turn_secret_points_at_turn_and_restarts_nothing(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    media_stack(mgr, tmp_path, standin_images, "answer", "not-the-turn-secret")
    with agent(mgr, "--no-apply") as a:
        event = unity_unhealthy(a)
        assert "ice_gather" in event["reason"] and "cause: turn" in event["reason"], event
        time.sleep(6)  # three more sessions: still no restart for another service's fault
        assert not a.find(event="restart", by="agent"), a.log()
        report = json.loads(sparc(mgr, "status", mgr.name, "--json").stdout)
        unity = next(s for s in report["services"] if s["service"] == "unity")
        assert unity["supervisor"]["state"] == "UNHEALTHY" and "ice_gather" in unity["supervisor"]["reason"]
