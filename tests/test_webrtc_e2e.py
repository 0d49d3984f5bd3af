"""The media path, for real: Debian's coturn (use-auth-secret), the URS signaling stand-in and the
aiortc renderer stand-in in one network namespace, `sparc-agent probe` in another (veth pair), so
relay-only ICE really crosses TURN. Healthy in both signaling modes and both answer flows; each
fault leaves the port probes green while webrtc fails at its phase, and the supervisor (fed the
real result as the agent feeds it) marks the renderer UNHEALTHY with that phase, restarting it only
when the fault is its own. Run under the e2e lock (namespaces)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.medianet import SIGNALING_PORT, TURN_PORT, MediaNet, available, media_net
from support.testhost import unavailable

from sparc_agent.agent.runner import apart_view
from sparc_agent.agent.supervisor import ServiceMachine, State, UnitView, plan_from_profile
from sparc_agent.probes import ProbeOutcome, ProbeResult
from sparc_agent.profile.load import load_profile

pytestmark = pytest.mark.e2e

PROFILE = """apiVersion: sparc-agent/v1
name: media
pod:
  ports: ["127.0.0.1:{sig}:{sig}", "127.0.0.1:{turn}:{turn}/udp", "127.0.0.1:49152-49200:49152-49200/udp"]
secrets:
  turn-secret: {{file: {secret}}}
services:
  signaling:
    image: localhost/x:1
    command: [node, build/index.js, -p, "{sig}"{http}]
    health: {{{sig_probe}: {{port: {sig}}}}}
  turn:
    image: localhost/x:1
    command: [-c, /run/sparc/turn-secret.conf, --use-auth-secret, --min-port=49152, --max-port=49200]
    health: {{stun: {{port: {turn}}}}}
  unity:
    image: localhost/x:1
    command: [/opt/SPARC-P.x86_64, -signalingUrl, "ws://127.0.0.1:{sig}"]
    health:
      exec: {{command: [pgrep, -f, SPARC]}}
      webrtc:
        port: {sig}
        signaling: {mode}
        signaling_service: signaling
        turn_service: turn
        turn_port: {turn}
        turn_secret: turn-secret
        timeout: 15s
        frame_timeout: 3s
    restart: {{policy: always}}
"""


@pytest.fixture
def net(tmp_path: Path) -> Iterator[MediaNet]:
    why = available()
    if why is not None:
        unavailable(f"media e2e cannot run: {why}")
    with media_net(tmp_path) as n:
        yield n


def profile(net: MediaNet, mode: str = "websocket", secret: str | None = None) -> Path:
    key = net.tmp / "turn-secret.conf"
    key.write_text(f"static-auth-secret={secret or net.secret}\n")  # coturn's config line, as the example
    key.chmod(0o600)
    path = net.tmp / "media.yaml"
    path.write_text(
        PROFILE.format(
            sig=SIGNALING_PORT,
            turn=TURN_PORT,
            secret=key,
            mode=mode,
            http=", -t, http" if mode == "http" else "",
            sig_probe="tcp" if mode == "http" else "websocket",
        )
    )
    return path


def probe(net: MediaNet, path: Path, service: str) -> dict[str, dict[str, Any]]:
    """`sparc-agent probe PROFILE SERVICE --json --host SERVER` from the client namespace."""
    argv = [sys.executable, "-m", "sparc_agent.cli.main", "probe", str(path), service, "--json"]
    done = net.client_run([*argv, "--host", net.server_ip])
    assert done.returncode in (0, 1), done.stdout + done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {r["kind"]: r for r in records}


def port_probes_green(net: MediaNet, path: Path) -> None:
    for service in ("signaling", "turn"):
        for kind, record in probe(net, path, service).items():
            assert record["ok"], (service, kind, record)


def supervised(path: Path, record: dict[str, Any]) -> ServiceMachine:
    """The renderer's machine, healthy by its own probe, fed the webrtc verdict as the agent feeds it."""
    plan = plan_from_profile(load_profile(str(path)).profile, 1)
    m = ServiceMachine(next(s for s in plan.services if s.name == "unity"), 0.0)
    m.adopt_running(UnitView("active", "running", invocation_id="x"), 0.0)
    m.on_probe(apart_view(ProbeResult(ProbeOutcome.OK, 0.01, "exit 0"), "", "unity"), 1.0)
    result = ProbeResult(
        ProbeOutcome(record["outcome"]),
        record["seconds"],
        record["detail"],
        phase=record["phase"],
        timings=record["timings"],
        hint=record["hint"],
        cause=record["cause"],
    )
    m.on_probe(apart_view(result, "webrtc", "unity"), 2.0)
    return m


def webrtc(net: MediaNet, path: Path) -> dict[str, Any]:
    record = probe(net, path, "unity")["webrtc"]
    print(f"webrtc: {json.dumps(record)}")  # the figures, for the closing note (-s)
    return record


@pytest.mark.parametrize(
    ("mode", "flow"),
    [("websocket", "answer"), ("websocket", "re-offer"), ("http", "answer"), ("http", "re-offer")],
)
def test_a_browser_gets_a_frame_through_turn(net: MediaNet, mode: str, flow: str) -> None:
    net.turn()
    net.signaling(mode)
    net.renderer(flow, mode)
    path = profile(net, mode)
    record = webrtc(net, path)
    assert record["ok"], (record, net.log("renderer")[-2000:], net.log("turn")[-2000:])
    assert list(record["timings"]) == [
        "signaling",
        "ice_gather",
        "answer",
        "ice_connect",
        "dtls",
        "first_frame",
    ]
    facts = record["facts"]
    assert facts["relay_candidates"] >= 1
    assert facts["flow"] == ("renderer-offer" if flow == "re-offer" else "renderer-answer")
    assert (facts["width"], facts["height"]) == (320, 240) and facts["codec"] in ("VP8", "H264")
    assert supervised(path, record).state is State.HEALTHY


FAULTS = {
    # fault: (phase, the service it points at, restarted by its policy)
    "wrong-secret": ("ice_gather", "turn", False),
    "relay-dropped": ("ice_connect", "turn", False),
    "no-frames": ("first_frame", "", True),
    "no-renderer": ("answer", "", True),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_fault_fails_at_its_phase_while_ports_stay_green(net: MediaNet, fault: str) -> None:
    phase, cause, restarted = FAULTS[fault]
    net.turn()
    net.signaling()
    if fault != "no-renderer":
        net.renderer("no-frames" if fault == "no-frames" else "answer")
    if fault == "relay-dropped":
        net.drop_relay_ports()
    path = profile(net, secret="not-the-turn-secret" if fault == "wrong-secret" else None)
    port_probes_green(net, path)
    record = webrtc(net, path)
    assert not record["ok"] and record["outcome"] == "failed", record
    assert (record["phase"], record["cause"]) == (phase, cause), record
    assert record["hint"]
    m = supervised(path, record)
    # UNHEALTHY, and at once BACKOFF towards a restart when the fault is the renderer's own
    assert m.state is (State.BACKOFF if restarted else State.UNHEALTHY) and phase in m.reason, m.reason
    action = m.due(10_000.0)  # long after any backoff
    assert (action is not None and action.act.value == "restart") is restarted, (m.reason, action)
    if cause:
        assert f"cause: {cause}" in m.reason


def test_the_renderer_image_streams_through_turn(net: MediaNet, standin_images: dict[str, str]) -> None:
    """The stand-in renderer as an image (Debian's python3-aiortc), as a stack would run it."""
    net.turn()
    net.signaling()
    net.renderer_container(standin_images["renderer"])
    record = webrtc(net, profile(net))
    assert record["ok"], record
    assert record["facts"]["relay_candidates"] >= 1
