"""Stack-level operations on a real manager: a changed pod is recreated; diff, down, down --purge."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.reader import quadlet_file
from support.stackfiles import avatar_profile, sparc, write_profile
from support.testhost import UserManager, free_port, http_get, podman

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_changed_port_recreates_the_pod(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    doc = avatar_profile(mgr, tmp_path)
    first = sparc(mgr, "apply", str(write_profile(doc, tmp_path / "p.yaml")))
    assert first.returncode == 0, first.stdout + first.stderr
    new_port = free_port()
    doc["pod"]["ports"][0] = f"{new_port}:8000"
    doc["services"]["mas"]["health"]["http"]["port"] = new_port
    second = sparc(mgr, "apply", str(write_profile(doc, tmp_path / "p.yaml")))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "recreating" in second.stderr and "5/5 services healthy" in second.stdout
    assert http_get(new_port, "/health")[1] == 200


def test_diff_down_and_purge(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    doc = avatar_profile(mgr, tmp_path)
    profile = write_profile(doc, tmp_path / "p.yaml")
    first = sparc(mgr, "diff", str(profile))
    assert first.returncode == 0 and f"+++ b/containers/systemd/{mgr.name}.pod" in first.stdout
    assert not list(mgr.quadlet_dir.iterdir())  # diff changes nothing
    assert sparc(mgr, "apply", str(profile)).returncode == 0
    assert sparc(mgr, "diff", str(profile)).stdout.strip() == f"{mgr.name}: no changes"

    down = sparc(mgr, "down", mgr.name)
    assert down.returncode == 0, down.stderr
    states = mgr.systemctl("show", "-p", "ActiveState", f"{mgr.name}-riva.service", f"{mgr.name}-pod.service")
    assert states.stdout.split() == ["ActiveState=inactive", "ActiveState=inactive"]
    assert quadlet_file(
        mgr.config_dir, mgr.name, f"{mgr.name}-riva.container"
    ).exists()  # kept: the target brings it back
    mgr.systemctl("start", f"{mgr.name}.target")
    assert mgr.systemctl("is-active", f"{mgr.name}-riva.service").stdout.strip() == "active"

    purge = sparc(mgr, "down", mgr.name, "--purge")
    assert purge.returncode == 0, purge.stderr
    assert not [p for p in mgr.config_dir.rglob("*") if p.is_file()]
    secrets = podman("secret", "ls", "--format", "{{.Name}}").stdout.split()
    assert f"{mgr.name}-openai-api-key" not in secrets


def test_changed_secret_restarts_its_consumer_only(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    doc = avatar_profile(mgr, tmp_path)
    profile = write_profile(doc, tmp_path / "p.yaml")
    assert sparc(mgr, "apply", str(profile)).returncode == 0
    env = podman("exec", f"{mgr.name}-mas", "printenv", "OPENAI_API_KEY").stdout.strip()
    assert env == "sk-test-not-a-real-key"
    (tmp_path / "openai.key").write_text("sk-rotated\n")
    again = sparc(mgr, "apply", str(profile))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 restarted" in again.stdout and "0 files written" in again.stdout, again.stdout
    assert podman("exec", f"{mgr.name}-mas", "printenv", "OPENAI_API_KEY").stdout.strip() == "sk-rotated"
    assert "sk-rotated" not in again.stdout + again.stderr  # never echoed
