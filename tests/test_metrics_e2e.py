"""The agent's /metrics scraped by a real Prometheus (Debian's): target up, a restart visible in increase()
through Prometheus' HTTP API, and `promtool check metrics` clean on the agent's real scrape."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.testhost import UserManager, free_port, podman, wait_for
from test_agent_e2e import agent, all_healthy, applied, wait_states

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROMETHEUS = "/usr/bin/prometheus"


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as answer:
        body: bytes = answer.read()
        return body


def query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    answer = json.loads(_get(url))
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """(agent metrics port, prometheus port): a Prometheus scraping 127.0.0.1:agent port every second."""
    if shutil.which(PROMETHEUS) is None:
        pytest.fail("prometheus not installed (scripts/test-host-setup.sh installs it)", pytrace=False)
    target, web = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: sparc-agent\n    static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _ready(web), timeout=30, interval=0.2, what="prometheus ready")
        yield target, web
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        print("--- prometheus log ---\n" + (tmp_path / "prometheus.log").read_text(errors="replace")[-3000:])


def _ready(port: int) -> bool:
    try:
        return b"Ready" in _get(f"http://127.0.0.1:{port}/-/ready")
    except OSError:
        return False


def test_prometheus_scrapes_the_agent_and_sees_a_restart(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path, prometheus: tuple[int, int]
) -> None:
    mgr = user_manager
    target, web = prometheus
    applied(mgr, tmp_path)
    config = mgr.config_dir / "sparc-agent" / "agent.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"metrics:\n  port: {target}\n")
    with agent(mgr, "--no-apply") as a:
        wait_states(mgr, all_healthy, 60, "all healthy under the agent")
        up = wait_for(
            lambda: [r for r in query(web, 'up{job="sparc-agent"}') if r["value"][1] == "1"],
            timeout=30,
            interval=0.5,
            what="target up",
        )
        print("up:", up)
        # the series exist from 0 before anything restarts, so increase() can see the first restart
        wait_for(
            lambda: query(web, f'sparc_restarts_total{{stack="{mgr.name}",service="mas",by="systemd"}}'),
            timeout=30,
            interval=0.5,
            what="restart series scraped",
        )
        podman("kill", f"{mgr.name}-mas")
        wait_for(lambda: a.find(event="restart", service="mas"), timeout=60, what="the agent saw the restart")
        wait_states(mgr, all_healthy, 60, "mas healthy again")
        expr = f'sum(increase(sparc_restarts_total{{stack="{mgr.name}",service="mas"}}[5m]))'
        result = wait_for(
            lambda: [r for r in query(web, expr) if float(r["value"][1]) > 0],
            timeout=30,
            interval=0.5,
            what="the restart in increase()",
        )
        print(f"{expr} -> {result}")
        # Prometheus has what it scraped up to a second ago: the agent's HEALTHY shows on a later scrape
        healthy = f'sparc_service_state{{stack="{mgr.name}",service="mas",state="HEALTHY"}} == 1'
        wait_for(lambda: query(web, healthy), timeout=30, interval=0.5, what="HEALTHY in prometheus")
        current = query(web, f'sparc_service_state{{stack="{mgr.name}",service="mas"}} == 1')
        assert [r["metric"]["state"] for r in current] == ["HEALTHY"]  # one state at a time
        durations = query(web, f'sparc_probe_duration_seconds_count{{stack="{mgr.name}"}}')
        assert {r["metric"]["kind"] for r in durations} == {"grpc", "http", "websocket", "stun", "exec"}

        scrape = _get(f"http://127.0.0.1:{target}/metrics")
        check = subprocess.run(
            ["promtool", "check", "metrics"], input=scrape, capture_output=True, timeout=30
        )
        print("promtool check metrics:", check.returncode, check.stdout.decode(), check.stderr.decode())
        assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip()


def _answers(port: int) -> bool:
    try:
        return b"# TYPE sparc_service_state gauge" in _get(f"http://127.0.0.1:{port}/metrics")
    except OSError:
        return False


def test_reload_takes_a_changed_agent_yaml_and_a_broken_one_keeps_serving(user_manager: UserManager) -> None:
    """What `systemctl --user reload sparc-agent` does (ExecReload: SIGHUP), to a real agent."""
    mgr = user_manager
    first, second = free_port(), free_port()
    config = mgr.config_dir / "sparc-agent" / "agent.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"metrics:\n  port: {first}\n")
    with agent(mgr, "--no-apply") as a:
        wait_for(lambda: _answers(first), timeout=30, what="metrics on the first port")
        config.write_text(f"metrics:\n  port: {second}\n")
        a.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _answers(second), timeout=30, what="metrics moved to the second port")
        assert not _answers(first)
        config.write_text("metrics: {port: nope}\n")
        a.proc.send_signal(signal.SIGHUP)
        refused = wait_for(
            lambda: a.find(event="metrics", level="error"), timeout=30, what="the refusal logged"
        )
        assert f"still serving 127.0.0.1:{second}" in refused[0]["reason"], refused
        assert _answers(second) and a.proc.poll() is None  # supervision goes on
