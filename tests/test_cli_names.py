"""The NAME of status, down, logs and restart follows the stack name rules: a path such as `../x`
never reaches the state directory (exit 2, nothing read or removed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sparc_agent.cli.main import main

pytestmark = pytest.mark.unit

BAD = ["../victim", "../../etc", "a/b", "Demo", "-x", "", "sparc-agent/../victim"]
COMMANDS = [["status"], ["down", "--purge"], ["logs"], ["restart"]]


@pytest.mark.parametrize("name", BAD)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_bad_stack_name_is_refused_before_anything_is_read(
    command: list[str], name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    victim = state / "victim"  # what `../victim` would reach from state/sparc-agent/
    victim.mkdir(parents=True)
    (victim / "keep").write_text("x")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    args = [*command, "--", name]
    if command[0] == "restart":
        args.append("web")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "invalid stack name" in result.output, result.output
    assert (victim / "keep").read_text() == "x"
