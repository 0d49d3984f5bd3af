"""GPU memory budgets: the profile rule, cgroup -> unit mapping, the fake NVML layer, doctor, status, apply's
check. No GPU needed: NVML is replaced by SPARC_FAKE_NVML (sparc_agent.host.gpu.FakeNvml)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparc_agent import doctor
from sparc_agent.apply import gpu_budget
from sparc_agent.apply.status import format_status
from sparc_agent.cli.main import main
from sparc_agent.host.gpu import (
    MIB,
    UNATTRIBUTED,
    FakeNvml,
    GpuProcess,
    GpuUnavailable,
    memory_by_unit,
    open_nvml,
    unit_of_cgroup,
)
from sparc_agent.profile.load import load_profile

pytestmark = pytest.mark.unit

UNIT_CGROUP = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/{unit}/libpod-payload-{cid}\n"
CID = "4d3c" * 16


def profile_text(
    memory: str = "24g", budgets: tuple[str, str, str] = ("3g", "13g", "3.5g"), enforce: bool = False
) -> str:
    riva, llm, unity = budgets
    return f"""apiVersion: sparc-agent/v1
name: gpu-demo
gpu:
  memory: {memory}
  enforce: {str(enforce).lower()}
services:
  riva:
    image: localhost/riva:1
    gpus: all
    resources: {{gpu_memory: {riva}}}
  llm:
    image: localhost/llm:1
    gpus: all
    depends_on: [riva]
    resources: {{gpu_memory: {llm}}}
  unity:
    image: localhost/unity:1
    gpus: all
    depends_on: [llm]
    resources: {{gpu_memory: {unity}}}
  signaling:
    image: localhost/signaling:1
"""


def fake(tmp_path: Path, total_mib: int = 23034, used: dict[str, int] | None = None) -> Path:
    processes = [
        {"pid": 1000 + i, "gpu": 0, "used_mib": mib, "cgroup": UNIT_CGROUP.format(unit=unit, cid=CID)}
        for i, (unit, mib) in enumerate((used or {}).items())
    ]
    path = tmp_path / "nvml.json"
    path.write_text(
        json.dumps(
            {
                "gpus": [{"name": "NVIDIA L4", "total_mib": total_mib, "used_mib": 7000}],
                "processes": processes,
            }
        )
    )
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- the profile


def test_the_deploy_guides_l4_budget_is_valid(tmp_path: Path) -> None:
    loaded = load_profile(str(write(tmp_path, profile_text())))
    assert loaded.profile.gpu.memory == 24 * 1024**3 and loaded.profile.gpu.enforce is False
    assert loaded.profile.services["llm"].resources.gpu_memory == 13 * 1024**3  # type: ignore[union-attr]


def test_budgets_over_the_declared_gpu_exit_2_at_gpu_memory(tmp_path: Path) -> None:
    path = write(tmp_path, profile_text(budgets=("3g", "13g", "9g")))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"{path}:4: gpu.memory: GPU memory budgets add up to 25.0 GiB (riva 3.0 GiB + llm 13.0 GiB"
        " + unity 9.0 GiB), more than the 24.0 GiB of the GPU (gpu.memory);"
        " lower a budget or use a larger GPU"
    )


def test_budgets_over_the_detected_gpu_exit_2_at_the_budget_that_overflows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPARC_FAKE_NVML", str(fake(tmp_path)))  # an L4: 22.5 GiB
    path = write(tmp_path, profile_text(memory="detect", budgets=("3g", "13g", "7g")))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(
        f"{path}:20: services.unity.resources.gpu_memory: GPU memory budgets add up"
    )
    assert "more than the 22.5 GiB of the GPU (detected: GPU 0, NVIDIA L4)" in result.output
    ok = CliRunner().invoke(main, ["validate", str(write(tmp_path, profile_text(memory="detect")))])
    assert ok.exit_code == 0, ok.output


def test_detect_without_nvml_validates_with_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARC_FAKE_NVML", str(tmp_path / "missing.json"))
    result = CliRunner().invoke(main, ["validate", str(write(tmp_path, profile_text(memory="detect")))])
    assert result.exit_code == 0
    assert "note: GPU memory budgets not checked (gpu.memory: detect)" in result.output


def test_a_budget_without_gpus_is_an_error(tmp_path: Path) -> None:
    text = profile_text() + "    resources: {gpu_memory: 1g}\n"
    result = CliRunner().invoke(main, ["validate", str(write(tmp_path, text))])
    assert result.exit_code == 2
    assert (
        "services.signaling.resources.gpu_memory: a GPU memory budget needs `gpus` on the service"
        in result.output
    )


@pytest.mark.parametrize("bad", ["lots", "-1g", "0"])
def test_bad_gpu_memory_is_refused(tmp_path: Path, bad: str) -> None:
    result = CliRunner().invoke(main, ["validate", str(write(tmp_path, profile_text(memory=bad)))])
    assert result.exit_code == 2 and ":4: gpu.memory: " in result.output, result.output


# ---------------------------------------------------------------- PID -> cgroup -> unit


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        (UNIT_CGROUP.format(unit="sparc-avatar-riva.service", cid=CID), "sparc-avatar-riva.service"),
        # podman 4 without split cgroups: the container's own scope below the user's slice
        ("0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + CID + ".scope\n", None),
        (
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/x-mas.service/libpod-payload-"
            + CID
            + "/container\n",
            "x-mas.service",
        ),
        ("0::/user.slice/user-1000.slice/session-3.scope\n", "session-3.scope"),
        (
            "12:pids:/a.service\n1:name=systemd:/user.slice/user@0.service/x-llm.service\n0::/\n",
            "x-llm.service",
        ),
        ("0::/\n", None),
        ("garbage", None),
    ],
)
def test_unit_of_cgroup(text: str, unit: str | None) -> None:
    assert unit_of_cgroup(text) == unit


def test_memory_by_unit_reads_proc_and_sums_processes(tmp_path: Path) -> None:
    for pid, unit in ((11, "a-llm.service"), (12, "a-llm.service"), (13, "a-unity.service")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cgroup").write_text(UNIT_CGROUP.format(unit=unit, cid=CID))
    processes = [
        GpuProcess(11, 0, 100 * MIB),
        GpuProcess(12, 0, 50 * MIB),
        GpuProcess(13, 0, None),  # NVML could not size it: not counted as 0 either
        GpuProcess(14, 0, 7 * MIB),  # gone before we read its cgroup: held, but by nobody we know
    ]
    assert memory_by_unit(processes, proc=tmp_path) == {"a-llm.service": 150 * MIB, UNATTRIBUTED: 7 * MIB}


def test_fake_layer_and_its_errors(tmp_path: Path) -> None:
    nvml = open_nvml({"SPARC_FAKE_NVML": str(fake(tmp_path, used={"x-riva.service": 3590}))})
    assert isinstance(nvml, FakeNvml)
    assert [(g.name, g.total // MIB) for g in nvml.gpus()] == [("NVIDIA L4", 23034)]
    assert memory_by_unit(nvml.processes()) == {"x-riva.service": 3590 * MIB}
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(GpuUnavailable, match="not a JSON object"):
        open_nvml({"SPARC_FAKE_NVML": str(tmp_path / "bad.json")})


# ---------------------------------------------------------------- doctor, apply, status


def test_doctor_gpu_section(tmp_path: Path) -> None:
    env = {"SPARC_FAKE_NVML": str(fake(tmp_path)), "PATH": "/usr/bin:/bin"}
    profile = load_profile(str(write(tmp_path, profile_text()))).profile
    checks = doctor.check_gpus(doctor.Host(env), profile)
    assert [(c.name, c.status, c.message) for c in checks] == [
        ("gpu0", "ok", "NVIDIA L4: 22.5 GiB total, 6.8 GiB used"),
        (
            "gpu-budget",
            "ok",
            "budgets 19.5 GiB of 22.5 GiB (NVIDIA L4) (the profile declares 24.0 GiB, GPU 0 has 22.5 GiB)",
        ),
    ]
    over = load_profile(
        str(write(tmp_path, profile_text(memory="detect", budgets=("3g", "13g", "7g"))))
    ).profile
    verdict = doctor.check_gpus(doctor.Host(env), over)[-1]
    assert (verdict.status, verdict.message) == (
        "fail",
        "budgets add up to 23.0 GiB, more than GPU 0 (NVIDIA L4) has: 22.5 GiB",
    )
    none = doctor.check_gpus(doctor.Host({"SPARC_FAKE_NVML": str(tmp_path / "no.json")}), profile)
    assert none[0].status == "warn" and "cannot read the GPUs" in none[0].message


@pytest.mark.parametrize(
    ("used", "enforce", "ok"), [(3000, False, True), (4000, False, True), (4000, True, False)]
)
def test_apply_check_warns_or_fails_over_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, used: int, enforce: bool, ok: bool
) -> None:
    monkeypatch.setenv("SPARC_FAKE_NVML", str(fake(tmp_path, used={"gpu-demo-riva.service": used})))
    profile = load_profile(str(write(tmp_path, profile_text(enforce=enforce)))).profile
    log = io.StringIO()
    verdict = gpu_budget.check(profile, "riva", "gpu-demo-riva.service", log)
    assert verdict[0] is ok
    over = (
        f"riva holds {used / 1024:.1f} GiB of GPU memory, over its budget of 3.0 GiB (resources.gpu_memory)"
    )
    if used <= 3072:
        assert log.getvalue() == f"riva holds {used / 1024:.1f} GiB of its 3.0 GiB GPU memory budget\n"
    elif enforce:
        assert verdict[1] == f"{over}; the profile enforces budgets (gpu.enforce: true)"
    else:
        assert log.getvalue() == f"warning: {over}\n"
    assert gpu_budget.check(profile, "signaling", "gpu-demo-signaling.service", log) == (True, "")


def test_status_text_shows_memory_per_gpu_service() -> None:
    services = [
        {
            "service": "riva",
            "state": "active/running",
            "health": "ok",
            "probe_ms": 1.0,
            "restarts": 0,
            "since": "",
            "gpu_memory_bytes": 3590 * MIB,
            "gpu_memory_budget_bytes": 3 * 1024**3,
        },
        {
            "service": "unity",
            "state": "active/running",
            "health": "ok",
            "probe_ms": None,
            "restarts": 0,
            "since": "",
            "gpu_memory_bytes": 1024 * MIB,
            "gpu_memory_budget_bytes": None,
        },
        {
            "service": "mas",
            "state": "active/running",
            "health": "ok",
            "probe_ms": None,
            "restarts": 0,
            "since": "",
            "gpu_memory_bytes": None,
            "gpu_memory_budget_bytes": None,
        },
    ]
    report = {
        "stack": "s",
        "generation": 1,
        "status": "healthy",
        "applied": "",
        "agent": None,
        "services": services,
        "gpu_note": None,
    }
    assert "GPU memory: riva 3.5 GiB of 3.0 GiB (OVER BUDGET), unity 1.0 GiB" in format_status(report)
    report["gpu_note"] = "GPU memory unknown: NVML: no driver"
    assert "GPU memory unknown: NVML: no driver" in format_status(report)


def test_apply_check_does_not_pass_what_it_could_not_attribute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rootless podman on cgroup v1: the container's processes sit in a libpod scope outside the unit
    path = tmp_path / "nvml.json"
    scope = "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + CID + ".scope"
    path.write_text(json.dumps({"gpus": [], "processes": [{"pid": 7, "used_mib": 4000, "cgroup": scope}]}))
    monkeypatch.setenv("SPARC_FAKE_NVML", str(path))
    profile = load_profile(str(write(tmp_path, profile_text(enforce=True)))).profile
    log = io.StringIO()
    assert gpu_budget.check(profile, "riva", "gpu-demo-riva.service", log) == (True, "")
    assert log.getvalue() == (
        "warning: riva: GPU memory not checked against its budget: 3.9 GiB is held by processes in no unit's"
        " cgroup (cannot tell whose)\n"
    )
