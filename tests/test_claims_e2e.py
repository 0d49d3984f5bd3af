"""apply asks the real user manager before its first write: a unit name that systemd already loads from
a file this stack did not write is refused (exit 3), and nothing is written or started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.stackfiles import sparc, unit_props, write_profile
from support.testhost import UserManager

pytestmark = [pytest.mark.e2e]


def one_service(stack: str, service: str) -> dict[str, Any]:
    # never started: the refusal comes before any pull or start, so no image is needed
    return {
        "apiVersion": "sparc-agent/v1",
        "name": stack,
        "services": {service: {"image": "localhost/never-pulled:1", "command": ["sleep", "600"]}},
    }


def written_by_apply(mgr: UserManager) -> list[Path]:
    return sorted(mgr.quadlet_dir.rglob("*")) if mgr.quadlet_dir.exists() else []


def test_a_hand_written_unit_of_the_same_name_is_not_taken_over(
    user_manager: UserManager, tmp_path: Path
) -> None:
    mgr = user_manager
    # a user unit outranks the one quadlet generates from STACK-web.container: apply would start it
    mgr.unit_dir.mkdir(parents=True, exist_ok=True)
    theirs = mgr.unit_dir / f"{mgr.name}-web.service"
    text = "[Service]\nExecStart=/bin/sleep 600\n"
    theirs.write_text(text)
    mgr.daemon_reload()

    done = sparc(mgr, "apply", str(write_profile(one_service(mgr.name, "web"), tmp_path / "p.yaml")))

    assert done.returncode == 3, done.stdout + done.stderr
    assert (
        f"{mgr.name}-web.service: it is loaded from {theirs}, which sparc-agent did not write" in done.stderr
    )
    assert written_by_apply(mgr) == []
    assert theirs.read_text() == text
    assert unit_props(mgr, f"{mgr.name}-web.service")["ActiveState"] == "inactive"


def test_another_stacks_unit_is_not_taken_over(user_manager: UserManager, tmp_path: Path) -> None:
    mgr = user_manager
    # stack NAME-b's pod and stack NAME's service `b-pod` are both NAME-b-pod.service, from two files
    other = write_profile(one_service(f"{mgr.name}-b", "web"), tmp_path / "other.yaml")
    rendered = tmp_path / "rendered"
    assert sparc(mgr, "render", str(other), "--out", str(rendered), "--podman-version", "4.4").returncode == 0
    mgr.unit_dir.mkdir(parents=True, exist_ok=True)
    theirs = mgr.unit_dir / f"{mgr.name}-b-pod.service"
    theirs.write_text((rendered / "systemd/user" / theirs.name).read_text())
    mgr.daemon_reload()

    done = sparc(mgr, "apply", str(write_profile(one_service(mgr.name, "b-pod"), tmp_path / "p.yaml")))

    assert done.returncode == 3, done.stdout + done.stderr
    assert f"{mgr.name}-b-pod.service: it is loaded from {theirs}, stack {mgr.name}-b's file" in done.stderr
    assert written_by_apply(mgr) == []
