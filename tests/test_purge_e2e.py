"""down --purge removes the stack's files (only those still ours), secrets and state; a failed first
apply leaves nothing running or current; state files are private from their first byte."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from support.stackfiles import avatar_profile, sparc, unit_props, write_profile
from support.testhost import UserManager, podman

pytestmark = [pytest.mark.e2e]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_is_private_and_purge_removes_it_but_not_a_hand_written_file(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    doc = avatar_profile(mgr, tmp_path)
    del doc["services"]["unity"]
    done = sparc(mgr, "apply", str(write_profile(doc, tmp_path / "p.yaml")))
    assert done.returncode == 0, done.stdout + done.stderr
    state = mgr.state_dir / "sparc-agent"
    stack = state / mgr.name
    current = stack / "current"
    assert mode(state) == 0o700 and mode(stack) == 0o700
    private = [current / "meta.json", current / "profile.yaml", stack / "secret.salt", stack / "inputs.json"]
    assert {p.name: mode(p) for p in private} == {p.name: 0o600 for p in private}

    mine = mgr.quadlet_dir / f"{mgr.name}-turn.container"
    mine.write_text("[Container]\nImage=localhost/hand-written:1\n")  # someone replaced ours by hand
    purge = sparc(mgr, "down", mgr.name, "--purge")
    assert purge.returncode == 0, purge.stderr
    assert f"kept {mine}" in purge.stderr, purge.stderr
    assert mine.read_text() == "[Container]\nImage=localhost/hand-written:1\n"
    left = sorted(p.name for p in mgr.config_dir.rglob("*") if p.is_file())
    assert left == [mine.name], left
    assert not stack.exists()  # generations, records, salt: nothing tells of the stack any more
    assert f"{mgr.name}-openai-api-key" not in podman("secret", "ls", "--format", "{{.Name}}").stdout.split()
    assert sparc(mgr, "status", mgr.name).returncode == 2


def test_a_failed_first_apply_leaves_nothing_running_or_current(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    doc = avatar_profile(mgr, tmp_path)
    del doc["services"]["unity"]
    doc["services"]["signaling"].update(image=standin_images["bb"], command=["sleep", "1000"])
    doc["services"]["signaling"]["health"].update(interval="1s", retries=2)
    done = sparc(mgr, "apply", str(write_profile(doc, tmp_path / "p.yaml")))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no earlier healthy generation: stopped it and removed its files" in done.stderr, done.stderr
    stack = mgr.state_dir / "sparc-agent" / mgr.name
    assert not (stack / "current").exists() and not (stack / "current").is_symlink()
    assert (stack / "generations" / "000001" / "meta.json").is_file()  # the record stays, for inspection
    assert not [p for p in mgr.config_dir.rglob("*") if p.is_file()]
    for service in ("riva", "mas", "signaling", "turn"):
        assert unit_props(mgr, f"{mgr.name}-{service}.service")["ActiveState"] in ("inactive", "failed")
    assert sparc(mgr, "status", mgr.name).returncode == 2
