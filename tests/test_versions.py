"""The one Version type and parser, and the one detection of what a host runs (host.detect), as
doctor, `render` and `apply` see it. Fake programs on a fake tree: no host needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparc_agent import doctor
from sparc_agent.host.detect import binaries, detect
from sparc_agent.versions import Target, Version

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("podman version 4.3.1", Version(4, 3)),
        ("quadlet version 5.4.2\n", Version(5, 4)),
        ("systemd 252 (252.38-1~deb12u1)\n+PAM +AUDIT", Version(252, 0)),
        ("252.38-1~deb12u1", Version(252, 38)),  # the user manager's Version property
        ("x86_64 build, podman 5.1", Version(5, 1)),  # not "86" from inside a word
        ("no digits here", None),
        ("", None),
    ],
)
def test_find_reads_tool_output(text: str, found: Version | None) -> None:
    assert Version.find(text) == found


def test_parse_takes_what_a_user_writes_and_refuses_the_rest() -> None:
    assert Version.parse("5.4") == Version(5, 4) == Version.parse(" v5.4.2")
    assert Version.parse("252") == Version(252)
    assert Version(4, 4) < Version(4, 10) < Version(5)
    with pytest.raises(ValueError, match="not a version"):
        Version.parse("podman 5.4")


def _program(path: Path, output: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\n")
    path.chmod(0o755)


@pytest.fixture
def fake_host(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """podman 4.3.1, quadlet 4.6.2, a site's own quadlet 5.4.2, systemd 252, RHEL 9.4."""
    _program(tmp_path / "bin/podman", "podman version 4.3.1")
    _program(tmp_path / "bin/systemctl", "systemd 252 (252.38-1~deb12u1)")
    _program(tmp_path / "usr/libexec/podman/quadlet", "quadlet version 4.6.2")
    _program(tmp_path / "opt/quadlet", "quadlet version 5.4.2")
    _program(tmp_path / "usr/lib/systemd/user-generators/podman-user-generator", "")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text(
        'NAME="RHEL"\nPRETTY_NAME="Red Hat Enterprise Linux 9.4 (Plow)"\n'
    )
    return tmp_path, {"PATH": str(tmp_path / "bin")}


def test_detect_reads_each_program_once(fake_host: tuple[Path, dict[str, str]]) -> None:
    root, env = fake_host
    found = detect(env, root)
    assert (found.podman.version, found.podman.text) == (Version(4, 3), "4.3.1")
    assert (found.quadlet.path, found.quadlet.version) == ("/usr/libexec/podman/quadlet", Version(4, 6))
    assert (found.systemd.version, found.systemd.text) == (Version(252), "252.38-1~deb12u1")
    assert found.distro == "Red Hat Enterprise Linux 9.4 (Plow)"
    assert found.target() == Target(
        podman=Version(4, 3),
        quadlet=Version(4, 6),
        systemd=252,
        rootless_v1_cgroups=found.rootless_v1_cgroups,
    )


def test_sparc_quadlet_is_honoured_by_detection_and_doctor_alike(
    fake_host: tuple[Path, dict[str, str]],
) -> None:
    root, env = fake_host
    env["SPARC_QUADLET"] = "/opt/quadlet"
    found = detect(env, root)
    assert (found.quadlet.path, found.quadlet.version) == ("/opt/quadlet", Version(5, 4))
    assert found.target().quadlet == Version(5, 4) and found.target().podman == Version(4, 3)
    assert "/opt/quadlet" in binaries(env, root)

    host = doctor.Host(env, root=root)
    assert host.versions == found
    assert "quadlet 5.4.2 at /opt/quadlet" in doctor.check_quadlet(host).message
    assert doctor.check_os(host).message == "Red Hat Enterprise Linux 9.4 (Plow)"
    assert doctor.check_systemd(host).message.startswith("systemd 252.38-1~deb12u1;")


def test_missing_and_silent_programs(tmp_path: Path) -> None:
    _program(tmp_path / "bin/podman", "")  # prints no version
    found = detect({"PATH": str(tmp_path / "bin"), "SPARC_QUADLET": "/nope"}, tmp_path)
    assert found.podman.path == str(tmp_path / "bin/podman") and found.podman.version is None
    assert found.quadlet.path is None and found.quadlet_looked == ("/nope",)
    assert found.systemd.path is None and found.distro == ""
    assert found.target() == Target(rootless_v1_cgroups=found.rootless_v1_cgroups)  # the defaults


def test_render_without_a_version_flag_uses_the_detected_quadlet(
    fake_host: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    # `render` used to ignore SPARC_QUADLET: quadlet 4.6 here cannot write .pod files, 5.4 can
    root, _ = fake_host
    profile = tmp_path / "p.yaml"
    profile.write_text("apiVersion: sparc-agent/v1\nname: s\nservices:\n  web:\n    image: localhost/web:1\n")
    out: dict[str, list[str]] = {}
    for quadlet in ("/usr/libexec/podman/quadlet", "/opt/quadlet"):
        dest = tmp_path / quadlet.replace("/", "_")
        done = subprocess.run(
            [sys.executable, "-m", "sparc_agent.cli.main", "render", str(profile), "--out", str(dest)],
            env={
                **os.environ,
                "PATH": f"{root / 'bin'}:{os.environ['PATH']}",
                "SPARC_QUADLET": str(root) + quadlet,
            },
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        out[quadlet] = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert "containers/systemd/s.pod" not in out["/usr/libexec/podman/quadlet"]
    assert "containers/systemd/s.pod" in out["/opt/quadlet"]


def test_a_too_old_quadlet_is_named_as_quadlet_with_both_versions() -> None:
    from sparc_agent.profile.model import Profile
    from sparc_agent.render import RenderError, render

    profile = Profile.model_validate(
        {"apiVersion": "sparc-agent/v1", "name": "s", "services": {"web": {"image": "localhost/web:1"}}}
    )
    with pytest.raises(
        RenderError, match=r"quadlet generator must be >= 4\.4 \(target: quadlet 4\.3, podman 5\.4\)"
    ):
        render(profile, Target(podman=Version(5, 4), quadlet=Version(4, 3)))
