"""The generation switch against the real quadlet generator and a real user manager: a daemon-reload
that anyone runs (another stack's apply, the user, a reboot) while an apply lies dead between "new
files written" and "switch" loads the old set whole (changed unit old, added unit absent, the target's
Wants old); the next apply converges without restarting what did not change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.reader import dangling, reader_view
from support.stackfiles import sparc, unit_props, write_profile
from support.testhost import UserManager

pytestmark = [pytest.mark.e2e]


def profile(stack: str, image: str, generation: str) -> dict[str, Any]:
    services: dict[str, Any] = {
        "steady": {"image": image, "command": ["sleep", "100000"]},
        "changed": {"image": image, "command": ["sleep", "100000"], "env": {"GEN": generation}},
    }
    if generation == "B":
        services["added"] = {"image": image, "command": ["sleep", "100000"]}
    return {"apiVersion": "sparc-agent/v1", "name": stack, "services": services}


def loaded(mgr: UserManager, unit: str) -> dict[str, str]:
    out = mgr.systemctl("show", unit, "-p", "LoadState,SourcePath,Wants,ActiveState").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_a_reload_between_written_and_switched_loads_the_old_set(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr, stack = user_manager, user_manager.name
    a = write_profile(profile(stack, standin_images["bb"], "A"), tmp_path / "a.yaml")
    b = write_profile(profile(stack, standin_images["bb"], "B"), tmp_path / "b.yaml")
    first = sparc(mgr, "apply", str(a))
    assert first.returncode == 0, first.stdout + first.stderr
    old = reader_view(mgr.config_dir, stack)
    steady = unit_props(mgr, f"{stack}-steady.service")["MainPID"]

    killed = sparc(mgr, "apply", str(b), env={"SPARC_AGENT_CRASH_AT": "before-switch"})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    generations = mgr.state_dir / "sparc-agent" / stack / "generations"
    assert (generations / "000002" / "files").is_dir()  # the new files are written, not switched to
    mgr.daemon_reload()

    assert reader_view(mgr.config_dir, stack) == old
    assert dangling(mgr.config_dir) == []  # the new target's link waits for `live` only in systemd/user
    changed = loaded(mgr, f"{stack}-changed.service")
    assert changed["SourcePath"].startswith(str(generations / "000001")), changed
    assert "GEN=A" in (mgr.generator_dir / f"{stack}-changed.service").read_text()
    assert loaded(mgr, f"{stack}-added.service")["LoadState"] == "not-found"
    assert f"{stack}-added.service" not in loaded(mgr, f"{stack}.target")["Wants"]
    assert mgr.state() == "running", mgr.state()  # nothing failed to load

    again = sparc(mgr, "apply", str(b))
    out = again.stdout + again.stderr
    assert again.returncode == 0 and "back to generation" not in out, out
    assert "GEN=B" in (mgr.generator_dir / f"{stack}-changed.service").read_text()
    live = (mgr.state_dir / "sparc-agent" / stack / "live").resolve()
    assert live.parent.name != "000001"  # the kill's generation 2, or a newer record of the same files
    assert loaded(mgr, f"{stack}-changed.service")["SourcePath"].startswith(str(live))
    assert loaded(mgr, f"{stack}-added.service")["ActiveState"] == "active"
    assert f"{stack}-added.service" in loaded(mgr, f"{stack}.target")["Wants"]
    assert unit_props(mgr, f"{stack}-steady.service")["MainPID"] == steady  # unchanged: not restarted
    assert dangling(mgr.config_dir) == []

    purge = sparc(mgr, "down", stack, "--purge")
    assert purge.returncode == 0, purge.stderr
    links = [p for p in mgr.config_dir.rglob("*") if p.is_symlink()]
    assert links == [] and reader_view(mgr.config_dir, stack) == {}, links
