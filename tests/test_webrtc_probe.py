"""The webrtc probe's pure parts and its boundaries: credentials, the child's report, blame, the
profile's rules, the plan, the CLI, and what happens without aiortc. The media path itself (real
coturn, aiortc, two network namespaces) is tests/test_webrtc_e2e.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparc_agent.agent.runner import apart_view
from sparc_agent.agent.supervisor import ServiceMachine, State, UnitView, plan_from_profile
from sparc_agent.apply.fastpath import spec_from_plan
from sparc_agent.cli.main import main
from sparc_agent.probes import ProbeOutcome, run_probe
from sparc_agent.probes.base import Target
from sparc_agent.probes.webrtc import WebRtcSpec, _Report, session_request, turn_rest_credentials
from sparc_agent.profile.load import ProfileInvalid, load_profile

pytestmark = pytest.mark.unit

PROFILE = """apiVersion: sparc-agent/v1
name: media
pod:
  ports: ["127.0.0.1:8080:8080", "127.0.0.1:3478:3478/udp", "127.0.0.1:49152-49200:49152-49200/udp"]
secrets:
  turn-secret: {{file: {secret}}}
services:
  signaling:
    image: localhost/x:1
    command: {sig_cmd}
    health: {{websocket: {{port: 8080}}}}
  turn:
    image: localhost/x:1
    command: {turn_cmd}
    secrets: {{TURN_SECRET: turn-secret}}
    health: {{stun: {{port: 3478}}}}
  unity:
    image: localhost/x:1
    command: {unity_cmd}
    health:
      exec: {{command: [pgrep, -f, SPARC]}}
      webrtc:
        port: 8080
        signaling_service: signaling
        turn_service: {turn_service}
        turn_secret: {turn_ref}
        interval: 30s
        timeout: 12s
"""
GOOD = {
    "sig_cmd": '["node", "build/index.js", "-p", "8080"]',
    "turn_cmd": '["--use-auth-secret", "--min-port=49152", "--max-port=49200"]',
    "unity_cmd": '["/opt/SPARC-P.x86_64", "-signalingUrl", "ws://127.0.0.1:8080"]',
    "turn_service": "turn",
    "turn_ref": "turn-secret",
}


def write(tmp_path: Path, **changes: str) -> str:
    secret = tmp_path / "turn.key"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    path = tmp_path / "media.yaml"
    path.write_text(PROFILE.format(secret=secret, **{**GOOD, **changes}))
    return str(path)


def test_turn_rest_credentials_are_coturns() -> None:
    user, password = turn_rest_credentials(b"north", 1_700_000_000.7, ttl_s=600)
    assert user == "1700000600:sparc-probe"
    # coturn: password = base64(HMAC-SHA1(static-auth-secret, username))
    assert password == base64.b64encode(hmac.new(b"north", user.encode(), hashlib.sha1).digest()).decode()
    assert turn_rest_credentials(b"south", 1_700_000_000, ttl_s=600)[1] != password


def test_the_child_gets_secret_sources_never_values(tmp_path: Path) -> None:
    spec = WebRtcSpec(port=8080, turn_secret="turn-secret")
    request = session_request(
        spec, Target("10.0.0.1", None, {"turn-secret": {"file": "/k"}, "other": {"env": "X"}})
    )
    assert request["secrets"] == {"turn-secret": {"file": "/k"}}
    assert request["host"] == "10.0.0.1"
    result = asyncio.run(run_probe(spec))  # the secret is not declared: our error, not the renderer's
    assert result.outcome is ProbeOutcome.ERROR
    assert "turn-secret" in result.detail


def report(*lines: dict[str, object], killed: bool = False) -> _Report:
    r = _Report()
    for line in lines:
        r.read(json.dumps(line).encode() + b"\n")
    r.read(b"not json\n")
    r.killed = killed
    return r


SPEC = WebRtcSpec(port=8080, signaling_service="signaling", turn_service="turn", timeout=10)


def test_a_full_session_reports_every_phase_and_the_frame() -> None:
    phases = ["signaling", "ice_gather", "answer", "ice_connect", "dtls"]
    lines = [{"phase": p, "s": i / 10} for i, p in enumerate(phases)]
    r = report(
        *lines, {"phase": "first_frame", "s": 0.9, "codec": "VP8", "width": 320, "height": 240}, {"ok": True}
    )
    result = r.result(SPEC, 1.0, 0, "")
    assert result.ok and result.phase == "first_frame"
    assert list(result.timings) == [*phases, "first_frame"]
    assert "VP8 320x240" in result.detail


@pytest.mark.parametrize(
    ("done", "failed", "cause", "hint"),
    [
        ([], "signaling", "signaling", "signaling server"),
        (["signaling"], "ice_gather", "turn", "TURN refused the credentials"),
        (["signaling", "ice_gather"], "answer", "", "no renderer answered"),
        (["signaling", "ice_gather", "answer"], "ice_connect", "turn", "relay ports not reachable"),
        (["signaling", "ice_gather", "answer", "ice_connect"], "dtls", "", "DTLS"),
        (
            ["signaling", "ice_gather", "answer", "ice_connect", "dtls"],
            "first_frame",
            "",
            "renderer sends no video",
        ),
    ],
)
def test_a_failure_names_its_phase_a_hint_and_whom_it_points_at(
    done: list[str], failed: str, cause: str, hint: str
) -> None:
    r = report(*({"phase": p, "s": 0.1} for p in done), {"failed": failed, "detail": "x", "hint": ""})
    result = r.result(SPEC, 1.0, 0, "")
    assert (result.outcome, result.phase, result.cause) == (ProbeOutcome.FAILED, failed, cause)
    assert hint in result.hint


def test_a_killed_session_fails_at_the_phase_it_did_not_finish() -> None:
    result = report({"phase": "signaling", "s": 0.1}, killed=True).result(SPEC, 12.0, -9, "")
    assert (result.outcome, result.phase, result.cause) == (ProbeOutcome.FAILED, "ice_gather", "turn")
    assert "killed" in result.detail


def test_a_dead_or_broken_session_is_our_error_not_a_failure() -> None:
    died = report().result(SPEC, 0.5, 1, "Traceback ...\nImportError: boom\n")
    assert died.outcome is ProbeOutcome.ERROR and "ImportError: boom" in died.detail
    missing = report({"error": "the webrtc probe needs aiortc: pip install 'sparc-agent[webrtc]'"})
    assert missing.result(SPEC, 0.5, 0, "").outcome is ProbeOutcome.ERROR


def test_without_aiortc_the_probe_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "aiortc.py").write_text("raise ImportError('no aiortc here')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = asyncio.run(run_probe(WebRtcSpec(port=port, timeout=10)))
    assert result.outcome is ProbeOutcome.ERROR
    assert "pip install 'sparc-agent[webrtc]'" in result.detail


def test_the_agent_side_never_imports_aiortc_or_av() -> None:
    code = (
        "import sys, asyncio\n"
        "from sparc_agent.probes import run_probe\n"
        "from sparc_agent.probes.webrtc import WebRtcSpec\n"
        "import sparc_agent.agent.runner\n"
        "asyncio.run(run_probe(WebRtcSpec(port=1, timeout=5)))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiortc', 'av', 'aioice', 'pydantic')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_profile_plan_and_spec_round_trip(tmp_path: Path) -> None:
    loaded = load_profile(write(tmp_path))
    health = loaded.profile.services["unity"].health
    assert health is not None and health.kind == "exec" and list(health.apart) == ["webrtc"]
    plan = plan_from_profile(loaded.profile, 1)
    unity = next(s for s in plan.services if s.name == "unity")
    assert unity.probe is not None and unity.probe["kind"] == "exec"
    assert [p["kind"] for p in unity.apart] == ["webrtc"]
    spec = spec_from_plan(json.loads(json.dumps(unity.apart[0])))
    assert isinstance(spec, WebRtcSpec)
    assert (spec.interval, spec.timeout_s, spec.turn_secret, spec.signaling) == (
        30.0,
        12.0,
        "turn-secret",
        "websocket",
    )
    assert not loaded.warnings, loaded.warnings


@pytest.mark.parametrize(
    ("change", "key", "text"),
    [
        ({"turn_service": "coturn"}, "webrtc.turn_service", "no service 'coturn'"),
        ({"turn_ref": "nope"}, "webrtc.turn_secret", "no secret 'nope'"),
    ],
)
def test_a_webrtc_probe_names_real_services_and_secrets(
    tmp_path: Path, change: dict[str, str], key: str, text: str
) -> None:
    with pytest.raises(ProfileInvalid) as err:
        load_profile(write(tmp_path, **change))
    assert any(key in str(p) and text in str(p) for p in err.value.problems), err.value.problems


def test_webrtc_alone_is_not_a_health_probe(tmp_path: Path) -> None:
    path = Path(write(tmp_path))
    path.write_text(path.read_text().replace("      exec: {command: [pgrep, -f, SPARC]}\n", ""))
    with pytest.raises(ProfileInvalid) as err:
        load_profile(str(path))
    assert any(
        "exactly one probe" in str(p) and "webrtc may come in addition" in str(p) for p in err.value.problems
    )


@pytest.mark.parametrize(
    ("change", "text"),
    [
        (
            {"sig_cmd": '["node", "server.js", "--httpPort", "8080"]'},
            "--httpPort is not a Unity Render Streaming",
        ),
        ({"unity_cmd": '["/opt/SPARC-P.x86_64", "-batchmode", "-signalingUrl", "ws://x"]'}, "-batchmode"),
        (
            {"turn_cmd": '["--use-auth-secret", "--min-port=40000", "--max-port=40100"]'},
            "relay range 40000-40100 is not published",
        ),
    ],
)
def test_validate_warns_on_the_known_media_mistakes(
    tmp_path: Path, change: dict[str, str], text: str
) -> None:
    result = CliRunner().invoke(main, ["validate", write(tmp_path, **change)])
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and text in result.output


def test_probe_command_exit_codes_and_json(tmp_path: Path) -> None:
    runner = CliRunner()
    profile = write(tmp_path)
    bad = runner.invoke(main, ["probe", profile, "nosuch"])
    assert bad.exit_code == 2 and "no service 'nosuch'" in bad.output
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        ok_profile = tmp_path / "tcp.yaml"
        ok_profile.write_text(
            "apiVersion: sparc-agent/v1\nname: t\npod:\n"
            f'  ports: ["127.0.0.1:{port}:{port}", "127.0.0.1:{port + 1}:{port + 1}"]\n'
            f"services:\n  a: {{image: localhost/x:1, health: {{tcp: {{port: {port}}}}}}}\n"
            f"  b: {{image: localhost/x:1, health: {{tcp: {{port: {port + 1}}}}}}}\n"
        )
        good = runner.invoke(main, ["probe", str(ok_profile), "a", "--json"])
        failed = runner.invoke(main, ["probe", str(ok_profile), "b", "--json"])
    assert good.exit_code == 0, good.output
    record = json.loads(good.output.strip().splitlines()[-1])
    assert {"kind", "ok", "phase", "timings", "hint"} <= record.keys()
    assert (record["kind"], record["ok"]) == ("tcp", True)
    assert failed.exit_code == 1
    assert json.loads(failed.output.strip().splitlines()[-1])["ok"] is False


def machine(tmp_path: Path) -> ServiceMachine:
    plan = plan_from_profile(load_profile(write(tmp_path)).profile, 1)
    m = ServiceMachine(next(s for s in plan.services if s.name == "unity"), 0.0)
    m.adopt_running(UnitView("active", "running", invocation_id="a"), 0.0)
    m.on_probe(apart_view(_ok_exec(), "", "unity"), 1.0)  # its own probe: healthy
    assert m.state is State.HEALTHY
    return m


def _ok_exec() -> object:
    from sparc_agent.probes import ProbeResult

    return ProbeResult(ProbeOutcome.OK, 0.01, "exit 0")


def test_a_failure_of_another_service_shows_but_does_not_restart_the_renderer(tmp_path: Path) -> None:
    m = machine(tmp_path)
    failed = report(
        {"phase": "signaling", "s": 0.1}, {"failed": "ice_gather", "detail": "0 relay candidates"}
    )
    m.on_probe(apart_view(failed.result(SPEC, 3.0, 0, ""), "webrtc", "unity"), 2.0)
    assert m.state is State.UNHEALTHY
    assert "ice_gather" in m.reason and "cause: turn" in m.reason
    assert m.due(100.0) is None  # no restart, however long


def test_the_renderers_own_failure_restarts_it_by_its_policy(tmp_path: Path) -> None:
    m = machine(tmp_path)
    lines = [{"phase": p, "s": 0.1} for p in ("signaling", "ice_gather", "answer", "ice_connect", "dtls")]
    failed = report(*lines, {"failed": "first_frame", "detail": "no video frame decoded within 5s"})
    m.on_probe(apart_view(failed.result(SPEC, 8.0, 0, ""), "webrtc", "unity"), 2.0)
    assert "first_frame" in m.reason and "renderer sends no video" in m.reason
    action = m.due(1000.0)
    assert action is not None and action.act.value == "restart"


def test_without_aiortc_validate_and_doctor_say_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from sparc_agent import doctor

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "aiortc" else real(name, *a)
    )
    path = write(tmp_path)
    result = CliRunner().invoke(main, ["validate", path])
    assert result.exit_code == 0 and "pip install 'sparc-agent[webrtc]'" in result.output, result.output
    check = doctor.check_webrtc(load_profile(path).profile)
    assert check.status == "warn" and "sparc-agent[webrtc]" in check.hint


def test_the_agent_runs_the_probe_apart_and_feeds_its_phase(tmp_path: Path) -> None:
    """The runner's loop for a probe that runs apart: a real session child against a signaling port
    where nothing listens; the renderer goes UNHEALTHY for signaling's fault, with no restart due,
    and the listeners see the phase."""
    from sparc_agent.agent.runner import Agent, AgentOptions, StackRunner
    from sparc_agent.agent.supervisor import ProbeView, ServicePlan, StackPlan
    from sparc_agent.state.paths import Paths

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    apart = {
        "kind": "webrtc",
        "port": closed,
        "signaling_service": "signaling",
        "interval": 0.05,
        "timeout": 10.0,
    }
    unity = ServicePlan(
        "unity", "s-unity.service", "s-unity", {"kind": "exec", "command": ["true"]}, apart=[apart]
    )
    agent = Agent(AgentOptions(log_format="json"), Paths.from_env({"XDG_STATE_HOME": str(tmp_path)}))
    seen: list[dict[str, object]] = []
    agent.listeners.append(lambda _stack, e: seen.append(e))
    runner = StackRunner(tmp_path, StackPlan("s", 1, (unity,)), agent)
    runner.carry_over(None, systemd_grows_delay=False)
    m = runner.machines["unity"]
    m.adopt_running(UnitView("active", "running", "success", 0, 100, "a"), 0.0)
    runner.feed_probe("unity", ProbeView("ok", 0.01, "exit 0"))
    assert m.state is State.HEALTHY

    async def until_fed() -> None:
        task = asyncio.create_task(runner._apart_loop("unity", apart))
        try:
            async with asyncio.timeout(30):
                while not any(e["event"] == "probe" and e.get("kind") == "webrtc" for e in seen):
                    await asyncio.sleep(0.05)
        finally:
            task.cancel()

    asyncio.run(until_fed())
    probe = next(e for e in seen if e["event"] == "probe" and e.get("kind") == "webrtc")
    assert (probe["outcome"], probe["phase"], probe["cause"]) == ("failed", "signaling", "signaling")
    assert m.state is State.UNHEALTHY and "signaling" in m.reason and "cause: signaling" in m.reason
    assert m.due(10_000.0) is None


def test_the_session_reads_secrets_as_files_config_lines_or_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sparc_agent.probes.webrtc_session import read_secret, turn_login

    bare, line = tmp_path / "bare", tmp_path / "turn.conf"
    bare.write_text("north\n")
    line.write_text("# coturn config\nstatic-auth-secret = north\n")
    monkeypatch.setenv("TURN_PW", "s3cret")
    assert read_secret({"file": str(bare)}) == read_secret({"file": str(line)}) == "north"
    assert read_secret({"env": "TURN_PW"}) == "s3cret"
    spec = {"turn_secret": "t", "turn_user": "", "turn_password": ""}
    user, password = turn_login(spec, {"t": {"file": str(line)}})
    assert user.endswith(":sparc-probe")
    assert password == base64.b64encode(hmac.new(b"north", user.encode(), hashlib.sha1).digest()).decode()
    static = {"turn_secret": "", "turn_user": "probe", "turn_password": "pw"}
    assert turn_login(static, {"pw": {"env": "TURN_PW"}}) == ("probe", "s3cret")


def test_the_example_runs_urs_and_a_closed_turn_relay_through_the_real_generator(tmp_path: Path) -> None:
    """issue 11 item 7 and issue 16 item 1: what podman will really be asked to run."""
    from test_quadlet_generator import QUADLET, exec_start_words, generate

    from sparc_agent.profile.rules import open_relays
    from sparc_agent.render import Target, render

    if not Path(QUADLET).exists():
        pytest.fail("no quadlet generator (scripts/test-host-setup.sh installs it)")
    root = Path(__file__).resolve().parent.parent
    loaded = load_profile(str(root / "examples" / "sparc-avatar.yaml"))
    units, _ = generate(render(loaded.profile, Target.for_podman("4.4")), tmp_path)
    turn = exec_start_words(units["sparc-avatar-turn.service"])
    for flag in (
        "--use-auth-secret",
        "--no-multicast-peers",
        "--no-tcp-relay",
        "--min-port=49152",
        "--max-port=49200",
    ):
        assert flag in turn, turn
    assert turn[turn.index("-c") + 1] == "/run/sparc/turn-secret.conf"  # the secret: a file, not an argument
    assert not any("static-auth-secret" in w for w in turn)
    denied = {w.split("=", 1)[1] for w in turn if w.startswith("--denied-peer-ip=")}
    for prefix in (
        "10.0.0.0-",
        "172.16.0.0-",
        "192.168.0.0-",
        "127.0.0.0-",
        "169.254.0.0-",
        "::1",
        "fc00::-",
        "fe80::-",
    ):
        assert any(d.startswith(prefix) for d in denied), (prefix, denied)
    signaling = exec_start_words(units["sparc-avatar-signaling.service"])
    assert signaling[-4:] == ["node", "build/index.js", "-p", "8080"]
    unity = exec_start_words(units["sparc-avatar-unity.service"])
    assert "-batchmode" not in unity and unity[unity.index("-signalingUrl") + 1].startswith("ws://")
    assert list(open_relays(loaded.profile)) == []
    assert not loaded.warnings, loaded.warnings
