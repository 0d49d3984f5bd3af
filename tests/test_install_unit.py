"""install.sh and the commands it relies on, without a user manager (fast)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparc_agent.cli.main import main
from sparc_agent.profile.model import Profile
from sparc_agent.render import Target, render, render_agent_unit

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "install.sh"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_install_sh_is_shellcheck_clean() -> None:
    done = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


def test_install_sh_arguments(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(INSTALL), *args], env=env, capture_output=True, text=True, check=False
        )

    assert run("--help").returncode == 0 and "--uninstall" in run("--help").stdout
    assert run("--bogus").returncode == 2
    assert run("--purge").returncode == 2
    missing = run("--profile", str(tmp_path / "none.yaml"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert not (tmp_path / ".local").exists()  # refused before touching anything


def test_render_agent_unit_command_prints_the_renderers_unit() -> None:
    out = CliRunner().invoke(main, ["render-agent-unit"])
    assert out.exit_code == 0
    assert out.output == render_agent_unit()
    assert 'ExecStart="%h/.local/bin/sparc-agent" "run"' in out.output  # %h stays a specifier
    assert "Type=notify" in out.output and "WatchdogSec=30s" in out.output
    other = CliRunner().invoke(main, ["render-agent-unit", "--exec-start", "/opt/sa bin/sparc-agent"])
    assert 'ExecStart="/opt/sa bin/sparc-agent" "run"' in other.output


def test_bash_completion_source() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "sparc-agent")],
        env={"_SPARC_AGENT_COMPLETE": "bash_source", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    # click names the function after the program; run as `sparc-agent` it is _sparc_agent_completion
    assert "complete -o nosort -F" in done.stdout, done.stdout + done.stderr


def _profile() -> Profile:
    return Profile.model_validate(
        {"apiVersion": "sparc-agent/v1", "name": "s", "services": {"web": {"image": "localhost/x:1"}}}
    )


def test_rootless_on_v1_cgroups_renders_cgroups_enabled() -> None:
    plain = render(_profile(), Target())["containers/systemd/s-web.container"]
    assert "--cgroups" not in plain
    rootless = render(_profile(), Target(rootless_v1_cgroups=True))["containers/systemd/s-web.container"]
    assert 'PodmanArgs="--cgroups=enabled"' in rootless
