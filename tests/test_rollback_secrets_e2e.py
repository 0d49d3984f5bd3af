"""Rollback puts back the podman secrets of the generation it returns to, from their sources, or says
plainly that it cannot (sparc-agent never keeps secret values)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.stackfiles import avatar_profile, sparc, write_profile
from support.testhost import UserManager, podman

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def broken_mas(doc: dict[str, Any], bb: str) -> dict[str, Any]:
    mas = {**doc["services"]["mas"], "image": bb, "command": ["sleep", "1000"]}
    mas["health"] = {**mas["health"], "interval": "1s", "retries": 2}
    return {**doc, "services": {**doc["services"], "mas": mas}}


def key_in_mas(mgr: UserManager) -> str:
    return podman("exec", f"{mgr.name}-mas", "printenv", "OPENAI_API_KEY").stdout.strip()


def test_rollback_restores_the_secret_or_says_it_cannot(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    doc = avatar_profile(mgr, tmp_path)
    del doc["services"]["unity"]
    assert sparc(mgr, "apply", str(write_profile(doc, tmp_path / "p.yaml"))).returncode == 0
    assert key_in_mas(mgr) == "sk-test-not-a-real-key"

    # generation 2 reads the secret from another file, and its mas never becomes healthy
    other = tmp_path / "other.key"
    other.write_text("sk-generation-2\n")
    doc2 = broken_mas(doc, standin_images["bb"])
    doc2["secrets"] = {"openai-api-key": {"file": str(other)}}
    done = sparc(mgr, "apply", str(write_profile(doc2, tmp_path / "p.yaml")))
    assert done.returncode == 1 and "rolled back to generation 1" in done.stderr, done.stdout + done.stderr
    assert "restored secret openai-api-key of generation 1" in done.stderr, done.stderr
    assert key_in_mas(mgr) == "sk-test-not-a-real-key"

    # generation 3 changes the value in the source generation 1 read: that value is gone for good
    (tmp_path / "openai.key").write_text("sk-rotated\n")
    done = sparc(mgr, "apply", str(write_profile(broken_mas(doc, standin_images["bb"]), tmp_path / "p.yaml")))
    assert done.returncode == 1 and "rolled back to generation 1" in done.stderr, done.stdout + done.stderr
    assert "cannot restore secret openai-api-key of generation 1" in done.stderr, done.stderr
    assert key_in_mas(mgr) == "sk-rotated"  # what it runs, said above; not a silent mix
    assert "sk-rotated" not in done.stdout + done.stderr and "sk-test" not in done.stdout + done.stderr
