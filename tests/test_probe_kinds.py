"""The table of probe kinds is the only place a kind is named: a new kind is one module plus one row.

The test writes a trivial kind (`banner`: the first line a TCP server sends starts with a prefix) as
its own module outside the package, adds its row to the table before anything else reads it, and
then uses it through the profile (validation, the published-port rule, error locations), the plan
the agent reads back, and a real probe of a local socket.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sparc_agent.probes import ProbeOutcome, run_probe
from sparc_agent.probes.kinds import KINDS, kind_of, spec_from_fields

pytestmark = pytest.mark.unit

BANNER_MODULE = """
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sparc_agent.probes.base import ProbeResult, Target, TargetFailed, close, measured, open_tcp
from sparc_agent.probes.fields import Port, Text


@dataclass(frozen=True)
class BannerSpec:
    port: Port
    prefix: Text = ""
    timeout_s: float = 2.0


async def probe(spec: BannerSpec, target: Target) -> ProbeResult:
    async def check() -> str:
        reader, writer = await open_tcp(target.host, spec.port)
        try:
            line = (await reader.readline()).decode().strip()
        finally:
            await close(writer)
        if not line.startswith(spec.prefix):
            raise TargetFailed(f"banner {line!r}")
        return line

    return await measured(check(), spec.timeout_s)
"""

DRIVER = """
import asyncio, json, sys
import banner_probe
from sparc_agent.probes.kinds import KINDS, Kind
KINDS["banner"] = Kind("banner", "tcp", banner_probe.BannerSpec, banner_probe.probe)  # the one row

from sparc_agent.agent.supervisor import ServicePlan  # noqa: E402  (reads the table after the row)
from sparc_agent.apply.fastpath import spec_from_plan
from sparc_agent.probes import run_probe
from sparc_agent.profile.load import ProfileInvalid, load_profile
from sparc_agent.profile.rules import probe_pod

out = {}
for name in ("good", "bad", "unpublished"):
    try:
        loaded = load_profile(sys.argv[1] + "/" + name + ".yaml")
    except ProfileInvalid as exc:
        out[name] = [str(p) for p in exc.problems]
        continue
    health = loaded.profile.services["web"].health
    out[name] = {"kind": health.kind, "spec": repr(health.spec), "pod": probe_pod(loaded.profile, "web")}
    plan = {"kind": health.kind, **health.probe.model_dump(mode="json"), "timeout_s": health.timeout}
    spec = spec_from_plan(json.loads(json.dumps(plan)))

    async def serve_once():
        async def hello(reader, writer):
            writer.write(b"SPARC ready\\n")
            await writer.drain()
            writer.close()
        server = await asyncio.start_server(hello, "127.0.0.1", int(sys.argv[2]))
        async with server:
            return await run_probe(spec)

    result = asyncio.run(serve_once())
    out[name]["result"] = [result.outcome.value, result.detail]
print(json.dumps(out))
"""

PROFILE = """apiVersion: sparc-agent/v1
name: demo
pod:
  ports: ["127.0.0.1:{published}:{published}"]
services:
  web:
    image: localhost/x:1
    health: {{banner: {{port: {port}, prefix: {prefix}}}, timeout: 1s}}
"""


def test_a_new_kind_is_one_module_and_one_row(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "banner_probe.py").write_text(BANNER_MODULE)
    (tmp_path / "good.yaml").write_text(PROFILE.format(published=port, port=port, prefix="SPARC"))
    (tmp_path / "bad.yaml").write_text(PROFILE.format(published=port, port=70000, prefix="SPARC"))
    (tmp_path / "unpublished.yaml").write_text(PROFILE.format(published=port, port=port + 1, prefix="x"))
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path), str(port)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["good"]["kind"] == "banner"
    assert out["good"]["spec"] == f"BannerSpec(port={port}, prefix='SPARC', timeout_s=1.0)"
    assert out["good"]["result"] == ["ok", "SPARC ready"]
    # the kind's field types validate in the profile, at the kind's key
    assert any("services.web.health.banner.port" in p and "65535" in p for p in out["bad"]), out["bad"]
    # the row's transport decides where it is probed: a published tcp port from the host, else in the pod
    assert out["good"]["pod"] is None
    assert out["unpublished"]["pod"] == "demo", out["unpublished"]


def test_every_row_is_consistent() -> None:
    for name, kind in KINDS.items():
        assert kind.name == name
        assert kind.transport in ("tcp", "udp", "exec")
        assert kind_of(spec_from_fields(name, _example(name))) is kind


def _example(name: str) -> dict[str, object]:
    return {"command": ["true"]} if KINDS[name].transport == "exec" else {"port": 80}


def test_unknown_spec_is_an_error_not_a_crash() -> None:
    result = asyncio.run(run_probe(object()))
    assert result.outcome is ProbeOutcome.ERROR
    assert "unknown probe spec" in result.detail


def test_the_stun_is_udp_rule_lives_in_the_table_only() -> None:
    """No module derives a probe's protocol from its kind's name ("udp" if stun): they ask the table."""
    root = Path(__file__).resolve().parent.parent / "sparc_agent"
    rule = re.compile(r'"udp" if .*(?:stun|Stun)|(?:stun|Stun).*else "udp"|kind (?:==|!=) "exec"')
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if rule.search(p.read_text())]
    assert offenders == []
