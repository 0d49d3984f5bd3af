"""The exec probe against real `podman exec` in a throwaway container (the unit tests fake podman)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
from testhost import podman

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
