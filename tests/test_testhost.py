"""The test-host fixtures themselves: a private user manager runs a quadlet, the stand-ins answer."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import support.testhost as testhost
from support.testhost import (
    BB_IMAGE,
    UserManager,
    free_port,
    grpc_health,
    http_get,
    podman,
    quadlet_dryrun,
    stun_binding,
    systemd_analyze_verify,
    wait_for,
    wait_tcp,
    ws_handshake,
)


@contextlib.contextmanager
def cleanup(prefix: str) -> Iterator[None]:
    """Removes every pod and container named `prefix*` on exit, even on failure, then checks none is left."""
    try:
        yield
    finally:
        for listing, remove in (
            (["pod", "ps", "--format", "{{.Name}}"], ["pod", "rm", "-f", "-t", "0"]),
            (["ps", "-a", "--format", "{{.Names}}"], ["rm", "-f", "-t", "0"]),
        ):
            names = [n for n in podman(*listing).stdout.split() if n.startswith(prefix)]
            if names:
                podman(*remove, *names, check=False)
        left = [
            n for n in podman("ps", "-a", "--format", "{{.Names}}").stdout.split() if n.startswith(prefix)
        ]
        assert not left, f"containers left behind: {left}"


@pytest.mark.e2e
def test_manager_is_private_and_in_its_own_cgroup(user_manager: UserManager) -> None:
    m = user_manager
    assert m.state() in ("running", "degraded")
    for cg in m.cgroup_dirs():
        # systemd moves itself into init.scope below its own cgroup
        pids = {p for f in cg.rglob("cgroup.procs") for p in f.read_text().split()}
        assert str(m.pid) in pids, cg
    env = m.systemctl("show-environment").stdout
    assert f"XDG_RUNTIME_DIR={m.run_dir}" in env
    # the bus answers (dbus.socket from dbus-user-session starts dbus-daemon on first use)
    out = m.busctl(
        "call",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.DBus.Properties",
        "Get",
        "ss",
        "org.freedesktop.systemd1.Manager",
        "Version",
    )
    assert out.stdout.startswith("v s ")
    print(f"manager ready in {m.start_seconds:.2f} s")


@pytest.mark.e2e
def test_quadlet_container_runs_in_manager(user_manager: UserManager, standin_images: dict[str, str]) -> None:
    m = user_manager
    port = free_port()
    (m.quadlet_dir / "web.container").write_text(
        f"""[Container]
Image={BB_IMAGE}
ContainerName={m.prefixed("web")}
Exec=httpd -f -p 80 -h /www
PublishPort=127.0.0.1:{port}:80
RunInit=true
LogDriver=journald
[Service]
# podman 4.3.1 keeps the id file: a restart would fail with "container id file exists"
ExecStartPre=-/bin/rm -f %t/%N.cid
# a stopped container exits 143 (SIGTERM via catatonit); without this the unit ends "failed"
SuccessExitStatus=143
"""
    )
    rc, out, err = quadlet_dryrun(m.quadlet_dir)
    assert rc == 0, err
    assert "[Service]" in out and f"{port}:80" in out
    m.daemon_reload()
    generated = m.generator_dir / "web.service"
    assert generated.is_file(), list(m.generator_dir.glob("*"))
    m.systemctl("start", "web.service")
    wait_tcp(port, 15)
    _version, status, body = http_get(port, "/index.html")
    assert (status, body) == (200, b"hello\n")
    assert m.systemctl("is-active", "web.service").stdout.strip() == "active"
    # journald tags the unit's output with the manager's slice and the user unit (podman prints the id)
    wait_for(lambda: m.journal("web.service").strip(), 10, what="journal of web.service")
    # the verify helper accepts the generated unit
    rc, text = systemd_analyze_verify([generated], m.environ())
    assert rc == 0, text
    m.systemctl("stop", "web.service")
    assert m.systemctl("is-active", "web.service", check=False).stdout.strip() == "inactive"
    assert m.prefixed("web") not in podman("ps", "-a", "--format", "{{.Names}}").stdout.split()


@pytest.mark.e2e
def test_quadlet_pod_and_volume(user_manager: UserManager, standin_images: dict[str, str]) -> None:
    """`.pod` + `.volume` through the real generator (on podman < 4.4 via the PODMAN shim)."""
    m = user_manager
    port = free_port()
    q = m.quadlet_dir
    (q / "data.volume").write_text(f"[Volume]\nVolumeName={m.prefixed('data')}\n")
    (q / "app.pod").write_text(
        f"[Pod]\nPodName={m.prefixed('app')}\nPublishPort=127.0.0.1:{port}:80\n"
        "[Service]\nExecStartPre=-/bin/rm -f %t/%N.pod-id\n"
    )
    (q / "app-web.container").write_text(
        f"[Container]\nImage={BB_IMAGE}\nContainerName={m.prefixed('app-web')}\nPod=app.pod\n"
        "Volume=data.volume:/www\n"
        "Exec=sh -c 'echo from-volume > /www/index.html; exec httpd -f -p 80 -h /www'\n"
        "RunInit=true\n[Service]\nExecStartPre=-/bin/rm -f %t/%N.cid\nSuccessExitStatus=143\n"
    )
    rc, _out, err = quadlet_dryrun(q)
    assert rc == 0, err
    m.daemon_reload()
    m.systemctl("start", "app-pod.service")
    wait_tcp(port, 20)
    assert wait_for(lambda: http_get(port, "/index.html")[2] == b"from-volume\n", 10, what="pod answers")
    assert m.prefixed("data") in podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
    m.systemctl("stop", "app-pod.service")
    assert m.prefixed("app") not in podman("pod", "ps", "--format", "{{.Name}}").stdout.split()


@pytest.mark.e2e
def test_quadlet_dryrun_reports_bad_file(tmp_path: Path) -> None:
    (tmp_path / "bad.container").write_text("[Container]\nExec=true\n")
    (tmp_path / "good.container").write_text(f"[Container]\nImage={BB_IMAGE}\n")
    rc, out, err = quadlet_dryrun(tmp_path)
    assert rc == 1
    assert "bad.container" in err and "Image" in err
    assert "---good.service---" in out


@pytest.mark.e2e
def test_standins_answer_their_protocols(standin_images: dict[str, str]) -> None:
    prefix = f"th-img-{os.urandom(3).hex()}"
    pod = f"{prefix}-pod"
    ports = {
        name: free_port("udp" if name == "turn" else "tcp") for name in ("riva", "mas", "signaling", "turn")
    }
    with cleanup(prefix):
        # one pod like the example profile: services reach each other on localhost
        podman(
            "pod",
            "create",
            "--name",
            pod,
            "-p",
            f"127.0.0.1:{ports['riva']}:50051",
            "-p",
            f"127.0.0.1:{ports['mas']}:8000",
            "-p",
            f"127.0.0.1:{ports['signaling']}:8080",
            "-p",
            f"127.0.0.1:{ports['turn']}:3478/udp",
        )

        def run(name: str, image: str, *args: str, env: dict[str, str] | None = None) -> str:
            cname = f"{prefix}-{name}"
            env_args = [f"--env={k}={v}" for k, v in (env or {}).items()]
            podman(
                "run", "-d", "--init", "--pod", pod, "--name", cname, *env_args, standin_images[image], *args
            )
            return cname

        run("riva", "riva", "--some", "riva", "args")  # arguments are ignored
        run("mas", "mas", env={"RIVA_API_URL": "localhost:50051"})
        run("signaling", "signaling", "node", "build/index.js", "-p", "8080")
        run(
            "turn",
            "coturn",
            "-n",
            "--listening-port=3478",
            "--min-port=49152",
            "--max-port=49200",
            "--no-cli",
        )
        unity = run("unity", "unity", env={"SIGNALING_URL": "ws://localhost:8080"})

        assert wait_for(lambda: grpc_health(ports["riva"]) == 1, 20, what="riva SERVING")
        wait_for(lambda: http_get(ports["mas"], "/health")[1] == 200, 20, what="mas healthy")
        version, _status, body = http_get(ports["mas"], "/health")
        assert version == "HTTP/1.1" and json.loads(body)["status"] == "ok"
        assert http_get(ports["mas"], "/nope")[1] == 404
        assert wait_for(lambda: ws_handshake(ports["signaling"]), 20, what="signaling ws") == (101, True)
        ip, mapped_port = wait_for(lambda: stun_binding(ports["turn"]), 20, what="stun")
        assert mapped_port > 0 and ip.count(".") == 3
        wait_for(
            lambda: podman("exec", unity, "pgrep", "-f", "SPARC-P.x86_64", check=False).returncode == 0,
            10,
            what="pgrep SPARC-P.x86_64",
        )
        wait_for(lambda: "connected to signaling" in podman("logs", unity).stdout, 10, what="unity connected")

        # mas answers 503 when riva goes away (so depends_on matters)
        podman("stop", "-t", "5", f"{prefix}-riva")
        wait_for(lambda: http_get(ports["mas"], "/health")[1] == 503, 10, what="mas unhealthy without riva")


@pytest.mark.e2e
def test_backend_standins_honour_example_commands(standin_images: dict[str, str]) -> None:
    """The commands of examples/sparc-backend.yaml: bridge `--port=`, mas `uvicorn ... --port`."""
    prefix = f"th-img-{os.urandom(3).hex()}"
    bridge, mas = free_port(), free_port()
    with cleanup(prefix):
        podman(
            "run",
            "-d",
            "--init",
            "--name",
            f"{prefix}-bridge",
            "-p",
            f"127.0.0.1:{bridge}:8081",
            standin_images["ws-bridge"],
            "riva-websocket-gateway",
            "--riva-uri=localhost:50051",
            "--port=8081",
        )
        podman(
            "run",
            "-d",
            "--init",
            "--name",
            f"{prefix}-mas",
            "-p",
            f"127.0.0.1:{mas}:8001",
            standin_images["mas"],
            "uvicorn",
            "main:app",
            "--host",
            "0.0.0.0",
            "--port",
            "8001",
        )
        assert wait_for(lambda: ws_handshake(bridge), 20, what="bridge ws") == (101, True)
        # no riva here: up, but unhealthy
        assert wait_for(lambda: http_get(mas, "/health")[1], 20, what="mas answers") == 503


@pytest.mark.e2e
def test_unity_standin_exits_without_signaling(standin_images: dict[str, str]) -> None:
    name = f"th-img-{os.urandom(3).hex()}-unity"
    with cleanup(name):
        # fake GPUs through the CDI spec of scripts/test-host-setup.sh
        podman(
            "run",
            "-d",
            "--init",
            "--name",
            name,
            "--device",
            "nvidia.com/gpu=all",
            "-e",
            "UNITY_CONNECT_TIMEOUT=1",
            "-e",
            f"SIGNALING_URL=ws://127.0.0.1:{free_port()}",
            standin_images["unity"],
        )
        wait_for(
            lambda: podman("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "exited",
            20,
            what="unity exits",
        )
        assert podman("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "1"
        logs = podman("logs", name).stdout
        assert "FAKE_GPU=all" in logs and "unreachable" in logs


@pytest.mark.unit
def test_free_port_hands_out_distinct_bindable_ports() -> None:
    ports = {free_port("both") for _ in range(20)}
    assert len(ports) == 20


@pytest.mark.unit
def test_missing_testhost_skips_on_a_laptop_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testhost, "testhost_problems", lambda: ["podman not installed"])
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("SPARC_REQUIRE_TESTHOST", raising=False)
    with pytest.raises(pytest.skip.Exception, match="podman not installed"):
        testhost.require_testhost()
    for var, value in (("CI", "true"), ("SPARC_REQUIRE_TESTHOST", "1")):
        with monkeypatch.context() as m:
            m.setenv(var, value)
            with pytest.raises(pytest.fail.Exception, match="test host not available"):
                testhost.require_testhost()
