"""An upgrade over state written by the code before schemas (tests/fixtures/state-v0) adopts the
running stack: the record is migrated, nothing is restarted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.stackfiles import avatar_profile, sparc, unit_props, write_profile
from support.testhost import UserManager

pytestmark = [pytest.mark.e2e]

V0_META = (
    Path(__file__).parent / "fixtures" / "state-v0" / "th-ce58d6" / "generations" / "000001" / "meta.json"
)


def as_v0(meta: dict[str, object]) -> dict[str, object]:
    """A record in the fixture's shape: its keys only, no schema."""
    fixture = json.loads(V0_META.read_text())
    old = {k: v for k, v in meta.items() if k in fixture}
    assert set(old) == set(fixture), set(fixture) ^ set(old)
    return old


def test_v0_state_is_migrated_without_restarting_anything(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    profile = write_profile(avatar_profile(mgr, tmp_path), tmp_path / "p.yaml")
    done = sparc(mgr, "apply", str(profile))
    assert done.returncode == 0, done.stdout + done.stderr
    services = [f"{mgr.name}-{s}.service" for s in ("riva", "mas", "signaling", "turn", "unity")]
    before = {u: (unit_props(mgr, u)["MainPID"], unit_props(mgr, u)["NRestarts"]) for u in services}
    meta_path = mgr.state_dir / "sparc-agent" / mgr.name / "current" / "meta.json"
    meta_path.write_text(json.dumps(as_v0(json.loads(meta_path.read_text())), indent=2))

    again = sparc(mgr, "apply", str(profile))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 started, 0 restarted, 5 unchanged; 0 files written" in again.stdout, again.stdout
    after = {u: (unit_props(mgr, u)["MainPID"], unit_props(mgr, u)["NRestarts"]) for u in services}
    assert after == before
    migrated = json.loads(meta_path.read_text())
    assert migrated["schema"] == 1 and migrated["render_key"], migrated
    assert migrated["status"] == "healthy"
    fast = sparc(mgr, "apply", str(profile))  # and the fast path trusts the migrated record again
    assert fast.returncode == 0 and "all unchanged" in fast.stdout, fast.stdout + fast.stderr
