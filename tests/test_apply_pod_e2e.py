"""A changed pod (ports) is recreated by apply: restarting containers alone would keep the old pod."""

from __future__ import annotations

from pathlib import Path

import pytest
from stackfiles import avatar_profile, sparc, write_profile
from testhost import UserManager, free_port, http_get

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
