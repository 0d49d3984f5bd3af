"""The exec probe against real `podman exec` in a throwaway container (the unit tests fake podman)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
from support.stackfiles import sparc, write_profile
from support.testhost import podman
from support.trixiehost import ApplyHost

from sparc_agent.probes import ExecSpec, ProbeOutcome, run_probe

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def container(standin_images: dict[str, str]) -> Iterator[str]:
    name = f"sparc-probe-e2e-{os.getpid()}"
    podman("run", "-d", "--rm", "--name", name, standin_images["bb"], "sleep", "300")
    try:
        yield name
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


def test_exec_ok(container: str) -> None:
    result = asyncio.run(run_probe(ExecSpec(command=("true",)), container=container))
    assert result.outcome is ProbeOutcome.OK, result


def test_exec_failure_shows_the_last_line(container: str) -> None:
    spec = ExecSpec(command=("sh", "-c", "echo starting; echo 'db: connection refused' >&2; exit 4"))
    result = asyncio.run(run_probe(spec, container=container))
    assert result.outcome is ProbeOutcome.FAILED
    assert result.detail == "exit 4: db: connection refused"


def test_exec_timeout(container: str) -> None:
    result = asyncio.run(run_probe(ExecSpec(command=("sleep", "3"), timeout_s=0.5), container=container))
    assert result.outcome is ProbeOutcome.FAILED and result.detail == "timed out after 0.5s"
    assert result.latency_s < 1.5


def test_exec_in_a_missing_container_fails() -> None:
    result = asyncio.run(run_probe(ExecSpec(command=("true",)), container="sparc-probe-e2e-no-such"))
    assert result.outcome is ProbeOutcome.FAILED and "no such container" in result.detail


def test_exec_probe_runs_inside_the_container(apply_host: ApplyHost) -> None:
    """On both hosts: the probe reads a file only the container has (a token its command wrote at start);
    run anywhere else (another root, as `podman exec` did under the trixie root's chroot) it fails."""
    mgr, tmp = apply_host.mgr, apply_host.tmp
    token = os.urandom(8).hex()
    check = ["grep", "-qx", token, "/run/exec-marker"]
    doc = {
        "apiVersion": "sparc-agent/v1",
        "name": mgr.name,
        "services": {
            "web": {
                "image": apply_host.images["bb"],
                "command": ["sh", "-c", f"echo {token} > /run/exec-marker && exec sleep 600"],
                "health": {"exec": {"command": check}, "interval": "1s"},
            }
        },
    }
    done = sparc(mgr, "apply", str(write_profile(doc, tmp / "exec.yaml")))
    assert done.returncode == 0, done.stdout + done.stderr  # apply's health gate ran the probe
    assert "1/1 services healthy" in done.stdout
    probe = sparc(mgr, "probe", mgr.name, "web")
    assert probe.returncode == 0, probe.stdout + probe.stderr
    # and the same check fails where the token is not: the probe's verdict comes from inside
    apply_host.podman("exec", f"{mgr.name}-web", "rm", "/run/exec-marker")
    gone = sparc(mgr, "probe", mgr.name, "web")
    assert gone.returncode == 1, gone.stdout + gone.stderr
