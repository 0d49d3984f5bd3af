"""One-shot init services (issue 12 item 9) on a real manager: a loader fills a shared volume, its
dependent starts only after it completed; an unchanged re-apply runs nothing; a changed loader runs
again; a failing loader fails the apply with its log tail and its dependent never starts."""

from __future__ import annotations

from typing import Any

import pytest
from support.stackfiles import sparc, status, write_profile
from support.testhost import BB_IMAGE, UserManager, free_port, http_get, wait_for
from support.trixiehost import ApplyHost
from test_agent_e2e import agent, agent_state

pytestmark = [pytest.mark.e2e]


def loader_stack(name: str, port: int, loader_command: str) -> dict[str, Any]:
    """tests/profiles/loader.yaml on this test's stack name and a free port."""
    return {
        "apiVersion": "sparc-agent/v1",
        "name": name,
        "pod": {"ports": [f"{port}:8000"]},
        "volumes": {"models": {}},
        "services": {
            "fetch-models": {
                "image": BB_IMAGE,
                "command": ["sh", "-c", loader_command],
                "volumes": ["models:/data"],
                "oneshot": True,
            },
            "server": {
                "image": BB_IMAGE,
                "command": ["httpd", "-f", "-p", "8000", "-h", "/data"],
                "volumes": ["models:/data:ro"],
                "depends_on": {"fetch-models": "completed"},
                "health": {"http": {"port": port, "path": "/model.txt"}, "interval": "1s"},
            },
        },
    }


def props(mgr: UserManager, unit: str) -> dict[str, str]:
    keys = "ActiveState,SubState,Result,InvocationID,ExecMainStatus,ExecMainExitTimestampMonotonic"
    out = mgr.systemctl("show", unit, "-p", keys + ",InactiveExitTimestampMonotonic").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_a_loader_runs_once_per_generation_before_its_dependent(apply_host: ApplyHost) -> None:
    """On both hosts: bookworm (podman 4.3, our pod unit) and trixie (podman 5.4, a quadlet .pod)."""
    mgr, tmp_path, port = apply_host.mgr, apply_host.tmp, free_port()
    loader, server = f"{mgr.name}-fetch-models.service", f"{mgr.name}-server.service"
    doc = loader_stack(mgr.name, port, "sleep 1; echo model-v1 > /data/model.txt")
    profile = write_profile(doc, tmp_path / "p.yaml")
    first = sparc(mgr, "apply", str(profile))
    assert first.returncode == 0, first.stdout + first.stderr
    ran, up = props(mgr, loader), props(mgr, server)
    assert (ran["ActiveState"], ran["SubState"], ran["ExecMainStatus"]) == ("active", "exited", "0")
    # the server left `inactive` only after the loader's container had exited
    assert int(up["InactiveExitTimestampMonotonic"]) > int(ran["ExecMainExitTimestampMonotonic"]) > 0
    assert http_get(port, "/model.txt")[1:] == (200, b"model-v1\n")
    assert mgr.journal(server).strip()  # a unit that ran logs something (the failing test relies on it)
    report = status(mgr, mgr.name)
    text = sparc(mgr, "status", mgr.name).stdout
    assert "2/2 healthy" in text and any(
        line.split()[:3] == ["fetch-models", "active/exited", "completed"] for line in text.splitlines()
    ), text
    assert {s["service"]: s["health"] for s in report["services"]} == {
        "fetch-models": "completed",
        "server": "ok",
    }

    # unchanged: the fast path, then the full path (an overlay that changes nothing defeats the fast
    # path's key): neither runs the loader again nor restarts the server
    same = tmp_path / "same.yaml"
    same.write_text(f"name: {mgr.name}\n")
    for extra in ([], ["-f", str(same)]):
        again = sparc(mgr, "apply", str(profile), *extra)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "0 started, 0 restarted, all unchanged" in again.stdout or (
            "0 started, 0 restarted, 2 unchanged" in again.stdout
        ), again.stdout
        assert props(mgr, loader)["InvocationID"] == ran["InvocationID"]
        assert props(mgr, server)["InvocationID"] == up["InvocationID"]

    # the agent shows it COMPLETED, never probes it (while it probes the server) and leaves it alone
    with agent(mgr, "--no-apply") as a:
        wait_for(
            lambda: a.find(event="state", service="fetch-models", state="COMPLETED"), 20, 0.1, "COMPLETED"
        )
        wait_for(lambda: agent_state(mgr)["services"]["server"]["probe"], 20, 0.1, "a probe of the server")
        seen = agent_state(mgr)["services"]["fetch-models"]
        assert (seen["state"], seen["probe"], seen["restarts_total"]) == ("COMPLETED", None, 0)
    assert props(mgr, loader)["InvocationID"] == ran["InvocationID"]

    # its own definition changed: it runs again, and the server starts again after it
    doc["services"]["fetch-models"]["command"][2] = "echo model-v2 > /data/model.txt"
    changed = sparc(mgr, "apply", str(write_profile(doc, profile)))
    assert changed.returncode == 0, changed.stdout + changed.stderr
    rerun, restarted = props(mgr, loader), props(mgr, server)
    assert rerun["InvocationID"] != ran["InvocationID"] and rerun["SubState"] == "exited"
    assert int(restarted["InactiveExitTimestampMonotonic"]) > int(rerun["ExecMainExitTimestampMonotonic"])
    assert http_get(port, "/model.txt")[1:] == (200, b"model-v2\n")

    # a later generation whose loader fails: the apply fails with its log tail and rolls back to 2 (the
    # unchanged re-applies made none), which
    # runs the previous loader again (its file changed back) and then the server
    doc["services"]["fetch-models"]["command"][2] = "echo mirror-unreachable >&2; exit 4"
    broken = sparc(mgr, "apply", str(write_profile(doc, profile)))
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "mirror-unreachable" in broken.stderr and "rolled back to generation 2" in broken.stderr, (
        broken.stderr
    )
    assert props(mgr, loader)["SubState"] == "exited" and props(mgr, server)["ActiveState"] == "active"
    assert http_get(port, "/model.txt")[1:] == (200, b"model-v2\n")


def test_a_failing_loader_fails_the_apply_and_its_dependent_never_starts(apply_host: ApplyHost) -> None:
    mgr, tmp_path, port = apply_host.mgr, apply_host.tmp, free_port()
    doc = loader_stack(mgr.name, port, "echo cannot-fetch-the-models >&2; exit 3")
    done = sparc(mgr, "apply", str(write_profile(doc, tmp_path / "p.yaml")))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "service fetch-models" in done.stderr and "cannot-fetch-the-models" in done.stderr, done.stderr
    # the server never started: apply did not start it, and no process of its unit ever ran (a started
    # one logs at least podman's container id). A failed first apply is withdrawn afterwards (its units
    # are gone), so the journal is what remains to tell.
    server = f"{mgr.name}-server.service"
    assert f"started {server}" not in done.stderr
    assert "cannot-fetch-the-models" in mgr.journal(f"{mgr.name}-fetch-models.service")
    assert mgr.journal(server).strip() == "", mgr.journal(server)
