"""`sparc-agent apply` on a real systemd user manager, the real quadlet generator and real containers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support.reader import quadlet_file, reader_view
from support.stackfiles import avatar_profile, sparc, status, unit_props, write_profile
from support.testhost import UserManager
from support.trixiehost import NETWORK, ApplyHost, TrixieManager

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVICES = ["riva", "mas", "signaling", "turn", "unity"]


def pids(mgr: UserManager, stack: str) -> dict[str, tuple[str, str]]:
    return {
        s: (p["MainPID"], p["NRestarts"]) for s in SERVICES for p in [unit_props(mgr, f"{stack}-{s}.service")]
    }


def test_fresh_apply_then_noop(apply_host: ApplyHost) -> None:
    """On both hosts (apply_host: bookworm = podman 4.3.1, trixie = podman 5.4 + systemd 257)."""
    mgr, tmp_path = apply_host.mgr, apply_host.tmp
    profile = write_profile(avatar_profile(mgr, tmp_path), tmp_path / "p.yaml")
    t0 = time.monotonic()
    done = sparc(mgr, "apply", str(profile))
    fresh = time.monotonic() - t0
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5/5 services healthy" in done.stdout
    print(f"fresh apply on {apply_host.kind}: {fresh:.2f} s")
    # rendered for what this host runs: the version-aware paths, each on the host that needs it
    meta = json.loads((mgr.state_dir / "sparc-agent" / mgr.name / "current" / "meta.json").read_text())
    mas = quadlet_file(mgr.config_dir, mgr.name, f"{mgr.name}-mas.container").read_text()
    assert quadlet_file(mgr.config_dir, mgr.name, f"{mgr.name}.pod").is_file() and "StartWithPod=false" in mas
    assert "Secret=" in mas
    volume_file = quadlet_file(mgr.config_dir, mgr.name, f"{mgr.name}-riva-models.volume").is_file()
    if apply_host.kind == "trixie":
        assert meta["target"] == {"podman": "5.4", "quadlet": "5.4", "systemd": 257}, meta["target"]
        assert "%t/%N.cid" not in mas  # podman 5 deletes its id files itself
        assert volume_file  # `.volume` needs `podman volume create --ignore` (4.4)
        assert isinstance(mgr, TrixieManager)
        networks = mgr.podman("pod", "inspect", mgr.name, "--format", "{{.InfraConfig.Networks}}").stdout
        assert NETWORK in networks, networks  # not the host podman's 10.88.0.0/16 (see trixiehost.NETWORK)
    else:
        assert meta["target"]["podman"] == "4.3" and meta["target"]["systemd"] == 252, meta["target"]
        assert "ExecStartPre=-/bin/rm -f %t/%N.cid" in mas and not volume_file
    report = status(mgr, mgr.name)
    assert [s["health"] for s in report["services"]] == ["ok"] * 5, report
    assert all(s["state"] == "active/running" for s in report["services"]), report

    before = pids(mgr, mgr.name)
    mtimes = {p: p.stat().st_mtime_ns for p in mgr.config_dir.rglob("*") if p.is_file()}
    again = sparc(mgr, "apply", str(profile))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 files written" in again.stdout and "0 restarted" in again.stdout and "0 started" in again.stdout
    assert "all unchanged" in again.stdout  # answered by the fast path (sparc_agent/apply/fastpath.py)
    assert pids(mgr, mgr.name) == before
    assert {p: p.stat().st_mtime_ns for p in mgr.config_dir.rglob("*") if p.is_file()} == mtimes


def test_service_stopped_by_hand_is_started_again(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    profile = write_profile(avatar_profile(mgr, tmp_path), tmp_path / "p.yaml")
    _apply_ok(mgr, profile)
    mgr.systemctl("stop", f"{mgr.name}-turn.service")
    out = _apply_ok(mgr, profile)  # the fast path sees turn inactive and hands over to the full apply
    assert "1 started" in out and "0 files written" in out and "all unchanged" not in out, out
    assert unit_props(mgr, f"{mgr.name}-turn.service")["ActiveState"] == "active"


def _apply_ok(mgr: UserManager, profile: Path, env: dict[str, str] | None = None) -> str:
    done = sparc(mgr, "apply", str(profile), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_env_change_restarts_only_that_service_and_its_healthy_dependents(apply_host: ApplyHost) -> None:
    mgr, tmp_path = apply_host.mgr, apply_host.tmp
    doc = avatar_profile(mgr, tmp_path)
    _apply_ok(mgr, write_profile(doc, tmp_path / "p.yaml"))
    before = pids(mgr, mgr.name)
    doc["services"]["signaling"]["env"]["PUBLIC_HOST"] = "example.org"
    out = _apply_ok(mgr, write_profile(doc, tmp_path / "p.yaml"))
    assert "1 files written" in out and "2 restarted" in out, out
    after = pids(mgr, mgr.name)
    changed = {s for s in SERVICES if after[s][0] != before[s][0]}
    assert changed == {"signaling", "unity"}  # unity depends on signaling being healthy
    assert all(after[s][1] == "0" for s in SERVICES)  # restarts by apply, not crashes


def test_removed_service_is_stopped_and_its_file_pruned(apply_host: ApplyHost) -> None:
    mgr, tmp_path = apply_host.mgr, apply_host.tmp
    doc = avatar_profile(mgr, tmp_path)
    _apply_ok(mgr, write_profile(doc, tmp_path / "p.yaml"))
    del doc["services"]["unity"]
    out = _apply_ok(mgr, write_profile(doc, tmp_path / "p.yaml"))
    assert "1 removed" in out, out
    assert not quadlet_file(mgr.config_dir, mgr.name, f"{mgr.name}-unity.container").exists()
    assert unit_props(mgr, f"{mgr.name}-unity.service")["ActiveState"] == "inactive"
    assert len(status(mgr, mgr.name)["services"]) == 4


def test_foreign_file_is_never_touched(user_manager: UserManager, tmp_path: Path) -> None:
    mgr = user_manager
    mgr.quadlet_dir.mkdir(parents=True, exist_ok=True)
    mine = mgr.quadlet_dir / f"{mgr.name}-mas.container"
    mine.write_text("[Container]\nImage=localhost/hand-written:1\n")
    done = sparc(mgr, "apply", str(write_profile(avatar_profile(mgr, tmp_path), tmp_path / "p.yaml")))
    assert done.returncode == 3 and "not generated by sparc-agent" in done.stderr, done.stderr
    assert mine.read_text() == "[Container]\nImage=localhost/hand-written:1\n"
    assert not quadlet_file(mgr.config_dir, mgr.name, f"{mgr.name}.pod").exists()


def test_broken_image_rolls_back_to_the_running_generation(apply_host: ApplyHost) -> None:
    mgr, tmp_path, standin_images = apply_host.mgr, apply_host.tmp, apply_host.images
    doc = avatar_profile(mgr, tmp_path)
    _apply_ok(mgr, write_profile(doc, tmp_path / "p.yaml"))
    good_mas = unit_props(mgr, f"{mgr.name}-mas.service")["MainPID"]
    # a "new version" of mas that starts but never answers its health probe
    doc["services"]["mas"].update(image=standin_images["bb"], command=["sleep", "1000"])
    doc["services"]["mas"]["health"] = {
        "http": doc["services"]["mas"]["health"]["http"],
        "interval": "1s",
        "retries": 2,
    }
    done = sparc(mgr, "apply", str(write_profile(doc, tmp_path / "p.yaml")))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "service mas" in done.stderr and "rolled back to generation 1" in done.stderr, done.stderr
    report = status(mgr, mgr.name)
    assert report["generation"] == 1
    assert [s["health"] for s in report["services"]] == ["ok"] * 5, report
    assert (
        "Image=localhost/sparc/mas-server:latest"
        in quadlet_file(mgr.config_dir, mgr.name, f"{mgr.name}-mas.container").read_text()
    )
    assert unit_props(mgr, f"{mgr.name}-mas.service")["MainPID"] != good_mas  # the old mas is back, restarted


# before/after the one rename of state.live (quadlet >= 5.3, this host's); mid-rename of the journaled
# flat files that a quadlet < 5.3 gets (a stand-in quadlet that says 5.2: the real generator still runs)
@pytest.mark.parametrize("point", ["before-switch", "after-switch", "mid-rename"])
def test_kill_during_apply_leaves_old_or_new_files_and_next_apply_converges(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path, point: str
) -> None:
    mgr = user_manager
    env: dict[str, str] = {}
    if point == "mid-rename":
        old_quadlet = tmp_path / "quadlet-5.2"
        old_quadlet.write_text("#!/bin/sh\necho 'quadlet 5.2.0'\n")
        old_quadlet.chmod(0o755)
        env["SPARC_QUADLET"] = str(old_quadlet)
    doc = avatar_profile(mgr, tmp_path)
    _apply_ok(mgr, write_profile(doc, tmp_path / "p.yaml"), env)
    old = reader_view(mgr.config_dir, mgr.name)
    for name in ("riva", "signaling", "turn"):
        doc["services"][name].setdefault("env", {})["GENERATION"] = "2"
    profile = write_profile(doc, tmp_path / "p.yaml")
    killed = sparc(mgr, "apply", str(profile), env={**env, "SPARC_AGENT_CRASH_AT": point})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    now = reader_view(mgr.config_dir, mgr.name)
    changed = {rel for rel in now if now[rel] != old.get(rel)}
    wanted = {f"containers/systemd/{mgr.name}-{s}.container" for s in ("riva", "signaling", "turn")}
    if point == "before-switch":
        assert now == old
    elif point == "after-switch":
        assert changed == wanted and set(now) == set(old)
    else:
        # a journal exists: the next command finishes the renames before anything else
        assert changed <= wanted
        assert (mgr.state_dir / "sparc-agent" / mgr.name / "commit.journal").exists()
    out = _apply_ok(mgr, profile, env)
    final = reader_view(mgr.config_dir, mgr.name)
    assert not [p for p in mgr.quadlet_dir.iterdir() if p.name.startswith(".")]  # no temp files left
    assert all("GENERATION=2" in final[rel] for rel in wanted)
    assert [s["health"] for s in status(mgr, mgr.name)["services"]] == ["ok"] * 5, out
    linked = (mgr.quadlet_dir / f"sparc-agent-{mgr.name}").is_symlink()
    assert linked is (point != "mid-rename")


def test_two_applies_do_not_interleave(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    import subprocess

    from support.stackfiles import SPARC_AGENT

    mgr = user_manager
    profile = write_profile(avatar_profile(mgr, tmp_path), tmp_path / "p.yaml")
    first = subprocess.Popen(
        [*SPARC_AGENT, "apply", str(profile)],
        env=mgr.environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = mgr.state_dir / "sparc-agent" / mgr.name / "apply.lock"
    import time

    deadline = time.monotonic() + 30
    while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
        assert time.monotonic() < deadline, "first apply never took the lock"
        time.sleep(0.02)
    busy = sparc(mgr, "apply", str(profile), "--no-wait")
    assert busy.returncode == 3 and f"pid {first.pid}" in busy.stderr, busy.stderr
    second = sparc(mgr, "apply", str(profile))
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"waiting for another sparc-agent apply (pid {first.pid})" in second.stderr
    assert "0 started" in second.stdout and "0 restarted" in second.stdout


def test_volume_driver_and_options_reach_podman(apply_host: ApplyHost) -> None:
    """trixie (podman 5.4): a .volume with Type=/Device=/Options=; bookworm (podman 4.3, no `volume create
    --ignore`): a unit of ours runs `podman volume create`. Either way podman gets the driver and options."""
    mgr, tmp_path = apply_host.mgr, apply_host.tmp
    doc = avatar_profile(mgr, tmp_path)
    doc["volumes"]["riva-models"] = {
        "driver": "local",
        "options": {"type": "tmpfs", "device": "tmpfs", "o": "nodev"},
    }
    profile = write_profile(doc, tmp_path / "p.yaml")
    first = sparc(mgr, "apply", str(profile))
    assert first.returncode == 0, first.stdout + first.stderr
    volume, unit = f"{mgr.name}-riva-models", f"{mgr.name}-riva-models-volume.service"
    ours = mgr.unit_dir / unit
    assert ours.is_file() is (apply_host.kind != "trixie"), apply_host.kind
    assert quadlet_file(mgr.config_dir, mgr.name, f"{volume}.volume").is_file() is (
        apply_host.kind == "trixie"
    )
    inspect = apply_host.podman("volume", "inspect", "--format", "{{.Driver}} {{.Options}}", volume)
    assert inspect.stdout.split() == ["local", "map[device:tmpfs", "o:nodev", "type:tmpfs]"], inspect.stderr
    assert mgr.systemctl("is-active", unit).stdout.strip() == "active"
    mounts = apply_host.podman(
        "inspect", "--format", "{{range .Mounts}}{{.Name}} {{end}}", f"{mgr.name}-riva"
    )
    assert volume in mounts.stdout.split()
    again = sparc(mgr, "apply", str(profile))  # the volume exists now: unchanged, nothing fails
    assert again.returncode == 0, again.stdout + again.stderr
