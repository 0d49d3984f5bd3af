"""GPU memory budgets through a real apply and status: a real user manager, a real container with a CDI GPU
(the test host's fake spec), and NVML replaced by SPARC_FAKE_NVML naming that container's unit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.stackfiles import sparc, status, write_profile
from support.testhost import BB_IMAGE, UserManager

pytestmark = [pytest.mark.e2e]


def profile(mgr: UserManager, enforce: bool) -> dict[str, Any]:
    return {
        "apiVersion": "sparc-agent/v1",
        "name": mgr.name,
        "gpu": {"memory": "24g", "enforce": enforce},
        "services": {
            "llm": {
                "image": BB_IMAGE,
                "command": ["sleep", "3600"],
                "gpus": "all",
                "resources": {"gpu_memory": "1g"},
            }
        },
    }


def fake_nvml(mgr: UserManager, tmp: Path, used_mib: int) -> dict[str, str]:
    unit = f"{mgr.name}-llm.service"
    path = tmp / "nvml.json"
    path.write_text(
        json.dumps(
            {
                "gpus": [{"name": "NVIDIA L4", "total_mib": 23034, "used_mib": used_mib}],
                "processes": [
                    {
                        "pid": 4242,
                        "used_mib": used_mib,
                        "cgroup": f"0::/{mgr.slice}/user@0.service/app.slice/{unit}",
                    }
                ],
            }
        )
    )
    return {"SPARC_FAKE_NVML": str(path)}


def test_apply_warns_over_budget_and_enforce_rolls_back(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    over = fake_nvml(mgr, tmp_path, 2048)
    done = sparc(mgr, "apply", str(write_profile(profile(mgr, False), tmp_path / "a.yaml")), env=over)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning: llm holds 2.0 GiB of GPU memory, over its budget of 1.0 GiB (resources.gpu_memory)" in (
        done.stdout + done.stderr
    )
    report = sparc(mgr, "status", mgr.name, env=over)
    assert "GPU memory: llm 2.0 GiB of 1.0 GiB (OVER BUDGET)" in report.stdout, report.stdout
    as_json = status(mgr, mgr.name)  # without the fake: this machine has no NVML
    assert as_json["gpu_note"].startswith("GPU memory unknown: NVML")

    enforced = sparc(mgr, "apply", str(write_profile(profile(mgr, True), tmp_path / "b.yaml")), env=over)
    assert enforced.returncode == 1, enforced.stdout + enforced.stderr
    out = enforced.stdout + enforced.stderr
    assert "over its budget of 1.0 GiB (resources.gpu_memory); the profile enforces budgets" in out
    assert "back to generation 1" in out

    within = fake_nvml(mgr, tmp_path, 900)
    again = sparc(mgr, "apply", str(tmp_path / "b.yaml"), env=within)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "llm holds 0.9 GiB of its 1.0 GiB GPU memory budget" in again.stdout + again.stderr
    data = json.loads(sparc(mgr, "status", mgr.name, "--json", env=within).stdout)
    llm = data["services"][0]
    assert (llm["gpu_memory_bytes"], llm["gpu_memory_budget_bytes"]) == (900 << 20, 1 << 30)
