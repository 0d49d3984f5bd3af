"""validate and doctor warn about an open TURN relay (a TURN/STUN port published beyond 127.0.0.1 by a
service whose command asks for no auth), and doctor about secret files others can read (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sparc_agent import doctor
from sparc_agent.cli.main import main
from sparc_agent.profile.load import load_profile

pytestmark = pytest.mark.unit


def turn_profile(tmp_path: Path, port: str, command: str, image: str = "docker.io/coturn/coturn:4.6") -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(
        "apiVersion: sparc-agent/v1\n"
        "name: demo\n"
        "pod:\n"
        "  ports:\n"
        '    - "8000:8000"\n'
        f'    - "{port}"\n'
        "services:\n"
        "  web: {image: localhost/web:1}\n"
        "  turn:\n"
        f"    image: {image}\n"
        f"    command: {command}\n"
        "    health: {stun: {port: 3478}}\n"
    )
    return path


OPEN = '["-n", "--listening-port=3478", "--no-cli"]'
AUTH = '["-n", "--use-auth-secret", "--static-auth-secret=S", "--realm=r"]'


@pytest.mark.parametrize(
    ("port", "command", "image", "warned"),
    [
        ("0.0.0.0:3478:3478/udp", OPEN, "docker.io/coturn/coturn:4.6", True),
        ("[::]:3478:3478/udp", OPEN, "docker.io/coturn/coturn:4.6", True),
        ("0.0.0.0:3478:3478/udp", '["turnserver", "-n"]', "localhost/any:1", True),  # by its command
        ("0.0.0.0:3478:3478/udp", AUTH, "docker.io/coturn/coturn:4.6", False),
        (
            "0.0.0.0:3478:3478/udp",
            '["-n", "--lt-cred-mech", "--user=u:p"]',
            "docker.io/coturn/coturn:4.6",
            False,
        ),
        ("127.0.0.1:3478:3478/udp", OPEN, "docker.io/coturn/coturn:4.6", False),
        ("3478:3478/udp", OPEN, "docker.io/coturn/coturn:4.6", False),  # pod.bind: 127.0.0.1
    ],
)
def test_validate_warns_about_an_open_turn_relay(
    tmp_path: Path, port: str, command: str, image: str, warned: bool
) -> None:
    profile = turn_profile(tmp_path, port, command, image)
    result = CliRunner().invoke(main, ["validate", str(profile)])
    assert result.exit_code == 0, result.output  # a warning, not an error
    line = f"{profile}:6: pod.ports[1]: warning: "
    hits = [m for m in result.output.splitlines() if m.startswith(line) and "TURN/STUN of service turn" in m]
    assert bool(hits) == warned, result.output
    if warned:
        assert "no auth flag" in hits[0] and "--use-auth-secret" in hits[0]

    check = doctor.check_turn_auth(load_profile(str(profile)).profile)
    assert check.status == ("warn" if warned else "ok"), check


def test_doctor_warns_about_secret_files_others_can_read(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config/sparc").mkdir(parents=True)
    tight, loose = home / ".config/sparc/tight.key", home / ".config/sparc/loose.key"
    tight.write_text("s1")
    tight.chmod(0o600)
    loose.write_text("s2")
    loose.chmod(0o644)
    path = tmp_path / "p.yaml"
    path.write_text(
        "apiVersion: sparc-agent/v1\nname: demo\n"
        "secrets:\n  a: {file: ~/.config/sparc/tight.key}\n  b: {file: ~/.config/sparc/loose.key}\n"
        "  c: {env: TOKEN}\n"
        "services:\n  web: {image: localhost/web:1, secrets: {A: a, B: b, C: c}}\n"
    )
    profile = load_profile(str(path)).profile
    host = doctor.Host({"HOME": str(home), "PATH": "/usr/bin"})

    check = doctor.check_secret_files(host, profile)
    assert check.status == "warn" and "chmod 600" in check.hint
    assert "secrets.b: ~/.config/sparc/loose.key is open to group or others (mode 0644)" in check.message
    assert "secrets.a" not in check.message

    loose.chmod(0o600)
    assert doctor.check_secret_files(host, profile).status == "ok"
    loose.unlink()
    gone = doctor.check_secret_files(host, profile)
    assert gone.status == "warn" and "secrets.b" in gone.message
