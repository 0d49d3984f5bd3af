"""Probes inside the pod's network namespace, on the real test host: a stack whose MAS and Riva publish
nothing on the host is applied (its probes green through the pod's namespace), nothing of them can
be reached from the host, `status` shows the probe, and the agent replaces a prober that dies or hangs
without blaming (or restarting) the services.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from support.stackfiles import sparc, status, unit_props, write_profile
from support.testhost import UserManager, free_port, podman, wait_for
from test_agent_e2e import FAST_RESTART, agent, states

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROBER = "sparc_agent.probes.inpod"


def private_profile(mgr: UserManager, tmp: Path) -> tuple[dict[str, Any], int, int]:
    """MAS (bound to 127.0.0.1 inside the pod) and Riva, neither published; ports free on the host too."""
    mas, riva = free_port(), free_port()
    key = tmp / "openai.key"
    key.write_text("sk-test-not-a-real-key\n")
    doc = {
        "apiVersion": "sparc-agent/v1",
        "name": mgr.name,
        "secrets": {"openai-api-key": {"file": str(key)}},
        "services": {
            "riva": {
                "image": "nvcr.io/nvidia/riva/riva-speech:2.16.0-server",
                "env": {"RIVA_STANDIN_PORT": str(riva)},
                "health": {"grpc": {"port": riva}, "start_period": "20s", "interval": "1s"},
            },
            "mas": {
                "image": "localhost/sparc/mas-server:latest",
                "command": ["uvicorn", "main:app", "--host", "127.0.0.1", "--port", str(mas)],
                "env": {"RIVA_API_URL": f"localhost:{riva}"},
                "secrets": {"OPENAI_API_KEY": "openai-api-key"},
                "depends_on": {"riva": "healthy"},
                "health": {"http": {"port": mas, "path": "/health"}, "interval": "1s", "timeout": "1s"},
                "restart": FAST_RESTART,
            },
        },
    }
    return doc, mas, riva


def refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def listening(port: int, netns_of: int | None = None) -> bool:
    """A TCP listener on `port` in the host's network namespace, or in that of process `netns_of`."""
    argv = ["ss", "-Htln", f"sport = :{port}"]
    if netns_of is not None:
        argv = ["nsenter", "-t", str(netns_of), "-n", "--", *argv]
    return bool(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip())


def probers(parent: int) -> list[int]:
    """The in-pod probers the agent (pid `parent`) runs now."""
    found = []
    for child in subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split():
        cmdline = (
            Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if Path(f"/proc/{child}").exists()
            else []
        )
        if PROBER.encode() in cmdline:
            found.append(int(child))
    return found


def netns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def test_unpublished_services_are_probed_inside_the_pod_only(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    doc, mas, riva = private_profile(mgr, tmp_path)
    done = sparc(mgr, "apply", str(write_profile(doc, tmp_path / "p.yaml")))
    # apply waits for both probes to pass: they did, through the pod's namespace
    assert done.returncode == 0, done.stdout + done.stderr
    assert "healthy" in done.stdout + done.stderr

    # nothing of the stack is reachable from the host: not on loopback, not at the pod's own address
    infra = podman("pod", "inspect", "--format", "{{.InfraContainerID}}", mgr.name).stdout.strip()
    infra_pid = int(podman("inspect", "--format", "{{.State.Pid}}", infra).stdout.strip())
    assert (
        podman("pod", "inspect", "--format", "{{len .InfraConfig.PortBindings}}", mgr.name).stdout.strip()
        == "0"
    )
    for port in (mas, riva):
        assert not listening(port), f"{port} listens on the host"
        assert listening(port, netns_of=infra_pid), f"{port} does not listen inside the pod"
        assert refused("127.0.0.1", port)
    pod_ip = podman("inspect", "--format", "{{.NetworkSettings.IPAddress}}", infra).stdout.strip()
    if pod_ip:  # rootful bridge: the pod has an address on the host; MAS listens on the pod's loopback only
        assert refused(pod_ip, mas)

    # status (no agent running) probes through the pod itself, and so does `probe` ...
    report = status(mgr, mgr.name)
    assert {s["service"]: s["health"] for s in report["services"]} == {"riva": "ok", "mas": "ok"}, report
    once = sparc(mgr, "probe", mgr.name, "mas", "--json")
    assert once.returncode == 0 and json.loads(once.stdout)["detail"] == "HTTP 200", once.stdout + once.stderr
    # ... unless told an address: there, on the host, nothing answers
    there = sparc(mgr, "probe", mgr.name, "mas", "--json", "--host", "127.0.0.1")
    assert there.returncode == 1 and json.loads(there.stdout)["detail"] == "Connection refused", there.stdout

    with agent(mgr, "--no-apply") as a:
        wait_for(lambda: states(mgr) == {"riva": "HEALTHY", "mas": "HEALTHY"}, 30, 0.1, "both HEALTHY")
        units = {s: unit_props(mgr, f"{mgr.name}-{s}.service")["MainPID"] for s in ("riva", "mas")}
        first = wait_for(lambda: probers(a.proc.pid), 10, what="the agent's prober")
        assert len(first) == 1, first  # one per pod, shared by both services
        assert netns(first[0]) == netns(infra_pid) != netns(os.getpid())

        # status with the agent running shows the agent's latest probe
        shown = {s["service"]: s for s in status(mgr, mgr.name)["services"]}
        assert shown["mas"]["health"] == "ok" and shown["mas"]["supervisor"]["probe"]["detail"] == "HTTP 200"
        assert "HEALTHY" in sparc(mgr, "status", mgr.name).stdout

        # a prober that dies, then one that hangs: our ERROR, replaced; the services are not touched
        previous = first[0]
        for sig, said in ((signal.SIGKILL, "died (killed by signal 9)"), (signal.SIGSTOP, "did not answer")):
            os.kill(previous, sig)

            def reported(said: str = said) -> bool:
                return any(said in e.get("probe", "") for e in a.find(event="probe_error"))

            def successor(old: int = previous) -> list[int]:
                return [p for p in probers(a.proc.pid) if p != old]

            wait_for(reported, 20, 0.1, f"probe_error: {said}")
            replaced = wait_for(successor, 20, what="a new prober")
            assert previous not in probers(a.proc.pid)  # the hung one was killed, not left behind
            previous = replaced[0]
            wait_for(lambda: states(mgr) == {"riva": "HEALTHY", "mas": "HEALTHY"}, 20, 0.1, "HEALTHY again")
        assert not a.find(event="restart"), a.log()
        assert not a.find(state="UNHEALTHY"), a.log()
        assert {s: unit_props(mgr, f"{mgr.name}-{s}.service")["MainPID"] for s in ("riva", "mas")} == units

        # and the in-pod probe does fail when the service does: MAS stopped -> UNHEALTHY -> restarted
        main = podman("inspect", "-f", "{{.State.Pid}}", f"{mgr.name}-mas").stdout.strip()
        for child in subprocess.run(["pgrep", "-P", main], capture_output=True, text=True).stdout.split():
            os.kill(int(child), signal.SIGSTOP)  # the server under catatonit: it accepts, never answers
        unhealthy = wait_for(
            lambda: a.find(event="state", service="mas", state="UNHEALTHY"), 30, 0.1, "mas UNHEALTHY"
        )
        assert f"(inside pod {mgr.name})" in json.dumps(unhealthy), unhealthy
        wait_for(lambda: a.find(event="restart", service="mas", by="agent"), 60, 0.1, "mas restarted")
        wait_for(lambda: states(mgr).get("mas") == "HEALTHY", 30, 0.1, "mas HEALTHY again")
        assert unit_props(mgr, f"{mgr.name}-mas.service")["MainPID"] != units["mas"]


# as the rootless user: its own pod, its own prober (nsenter -U into podman's user namespace first)
DRIVER = """
import asyncio, json, os, signal, sys
from sparc_agent.probes import run_probe
from sparc_agent.probes.http import HttpSpec
from sparc_agent.probes.inpod import PodProber

async def main(pod, port):
    spec = HttpSpec(port=port, path="/", status=(200, 499), timeout_s=2)
    prober = PodProber(pod)
    seen = {}
    r = await prober.probe(spec)
    seen["inside"] = [r.outcome.value, r.detail]
    r = await run_probe(spec)
    seen["host"] = [r.outcome.value, r.detail]
    status = open(f"/proc/{prober.pid}/status").read()
    seen["uid"] = int(next(l for l in status.splitlines() if l.startswith("Uid:")).split()[1])
    seen["own_netns"] = os.readlink(f"/proc/{prober.pid}/ns/net") == os.readlink("/proc/self/ns/net")
    os.kill(prober.pid, signal.SIGKILL)
    await asyncio.sleep(0.5)
    r = await prober.probe(spec)
    seen["after_kill"] = [r.outcome.value, r.detail]
    r = await prober.probe(spec)
    seen["again"] = [r.outcome.value, r.detail, prober.starts]
    await prober.close()
    print(json.dumps(seen))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_rootless_prober_joins_the_users_pod(make_rootless_user: Any) -> None:
    from support.testhost import BB_IMAGE, REPO, build_standin_images
    from test_install_e2e import ensure_tun_for_users

    ensure_tun_for_users()
    build_standin_images()
    shared = Path(tempfile.mkdtemp(prefix="sparc-inpod-"))  # pytest's tmp_path is root's alone (0700)
    try:
        shared.chmod(0o755)
        archive = shared / "bb.tar"
        podman("save", "-q", "-o", str(archive), BB_IMAGE)
        archive.chmod(0o644)
        user = make_rootless_user()
        user.run(["podman", "load", "-q", "-i", str(archive)], check=True)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    port = free_port()
    pod = f"{user.name}-pod"
    user.podman("pod", "create", "--name", pod, check=True)
    user.podman(
        "run", "-d", "--pod", pod, BB_IMAGE, "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/", check=True
    )
    # the package from this checkout with the system's Python (no third-party module is needed here)
    done = user.run(
        ["/usr/bin/python3", "-P", "-c", DRIVER, pod, str(port)], check=True, PYTHONPATH=str(REPO)
    )
    seen = json.loads(done.stdout)
    assert seen["inside"][0] == "ok", seen  # an HTTP answer from the pod's loopback
    assert seen["host"] == ["failed", "Connection refused"], seen  # nothing of it on the host
    assert seen["uid"] == user.uid and not seen["own_netns"], seen  # the user's own process, in the pod
    assert seen["after_kill"][0] == "error" and "died (killed by signal 9)" in seen["after_kill"][1], seen
    assert seen["again"][0] == "ok" and seen["again"][2] == 2, seen
