"""`sparc-agent export kube`: golden files, the Kubernetes schema, and a real `podman kube play`."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from support.testhost import (
    free_port,
    grpc_health,
    http_get,
    podman,
    run,
    stun_binding,
    wait_for,
    ws_handshake,
)

from sparc_agent.cli.export import export
from sparc_agent.export.kube import KubeOptions, export_kube, k8s_literal
from sparc_agent.profile.load import load_profile

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "export"
EXAMPLES = ["sparc-avatar", "sparc-backend", "loader"]  # loader: tests/profiles/ (a one-shot)
K8S_VERSION = "1.30.0"
VARIANTS = {
    "kube.yaml": KubeOptions(),
    "kube-deployment-nodeport.yaml": KubeOptions(deployment=True, replicas=2, service_type="NodePort"),
}


def _source(example: str) -> Path:
    return ROOT / ("tests/profiles" if example == "loader" else "examples") / f"{example}.yaml"


def _export(example: str, options: KubeOptions) -> str:
    profile = load_profile(str(_source(example))).profile
    return export_kube(profile, options, source=str(_source(example).relative_to(ROOT)))


@pytest.mark.unit
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("example", EXAMPLES)
def test_golden(example: str, variant: str, update_golden: bool) -> None:
    text = _export(example, VARIANTS[variant])
    path = GOLDEN / example / variant
    if update_golden:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs: run pytest --update-golden and review the diff"


@pytest.mark.unit
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("example", EXAMPLES)
def test_valid_against_the_kubernetes_schema(example: str, variant: str) -> None:
    docs = [d for d in yaml.safe_load_all(_export(example, VARIANTS[variant])) if d]
    assert {d["kind"] for d in docs} >= {"Service", "Deployment" if "deployment" in variant else "Pod"}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises with the offending path


def _profile(tmp: Path, doc: dict[str, Any]) -> Path:
    base = {"apiVersion": "sparc-agent/v1", "name": "t"}
    path = tmp / "p.yaml"
    path.write_text(yaml.safe_dump({**base, **doc}))
    return path


@pytest.mark.unit
def test_secrets_are_referenced_never_inlined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "k"
    key.write_text("sk-FILE-SECRET")
    monkeypatch.setenv("TOKEN_SRC", "sk-ENV-SECRET")
    path = _profile(
        tmp_path,
        {
            "secrets": {"a": {"file": str(key)}, "b": {"env": "TOKEN_SRC"}},
            "services": {"web": {"image": "localhost/x:1", "secrets": {"A": "a", "B": "b"}}},
        },
    )
    text = export_kube(load_profile(str(path)).profile)
    assert "sk-FILE-SECRET" not in text and "sk-ENV-SECRET" not in text
    env = yaml.safe_load(text.split("---\n")[1])["spec"]["containers"][0]["env"]
    assert env == [
        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "t-a", "key": "value"}}},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "t-b", "key": "value"}}},
    ]
    assert f"kubectl create secret generic t-a --from-file=value={key}" in text
    assert 'printf %s "$TOKEN_SRC" | kubectl create secret generic t-b' in text


@pytest.mark.unit
def test_probe_ports_are_container_ports_and_hostports_keep_the_bind_address(tmp_path: Path) -> None:
    path = _profile(
        tmp_path,
        {
            "pod": {"ports": ["18000:8000", "0.0.0.0:13478:3478/udp"]},
            "services": {
                "web": {
                    "image": "localhost/x:1",
                    "health": {
                        "http": {"port": 18000, "path": "/h"},
                        "interval": "500ms",
                        "start_period": "10s",
                    },
                },
                "turn": {"image": "localhost/t:1", "health": {"stun": {"port": 13478}}},
            },
        },
    )
    docs = list(yaml.safe_load_all(export_kube(load_profile(str(path)).profile)))
    pod = next(d for d in docs if d and d["kind"] == "Pod")
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    web, turn = containers["web"], containers["turn"]
    assert web["livenessProbe"] == {
        "httpGet": {"path": "/h", "port": 8000},
        "periodSeconds": 1,
        "timeoutSeconds": 2,
        "failureThreshold": 3,
    }
    assert web["startupProbe"]["failureThreshold"] == 10 + 3
    assert web["ports"] == [
        {"containerPort": 8000, "hostPort": 18000, "hostIP": "127.0.0.1", "protocol": "TCP"}
    ]
    assert turn["readinessProbe"]["tcpSocket"] == {"port": 3478}
    assert turn["ports"][0]["hostIP"] == "0.0.0.0" and turn["ports"][0]["protocol"] == "UDP"


@pytest.mark.unit
def test_nodeport_keeps_loopback_ports_cluster_internal() -> None:
    docs = [d for d in yaml.safe_load_all(_export("sparc-avatar", KubeOptions(service_type="NodePort"))) if d]
    services = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Service"}
    public = {p["port"] for p in services["sparc-avatar"]["ports"]}
    local = {p["port"] for p in services["sparc-avatar-local"]["ports"]}
    assert (
        services["sparc-avatar"]["type"] == "NodePort"
        and services["sparc-avatar-local"]["type"] == "ClusterIP"
    )
    assert 3478 in public and 49200 in public and not {8000, 8080, 8888, 50051} & public
    assert local == {8080}  # MAS and Riva are not published at all: the agent probes them inside the pod


@pytest.mark.unit
@pytest.mark.parametrize(
    ("value", "escaped"),
    [("plain", "plain"), ("$HOME", "$HOME"), ("$(HOME)", "$$(HOME)"), ("a$$b", "a$$$b"), ("100%", "100%")],
)
def test_kubernetes_expansion_is_escaped(value: str, escaped: str) -> None:
    assert k8s_literal(value) == escaped


@pytest.mark.unit
def test_cli_errors_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    example = str(ROOT / "examples" / "sparc-backend.yaml")
    result = runner.invoke(export, ["kube", example, "--replicas", "3"])
    assert result.exit_code == 2 and "--replicas needs --deployment" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: sparc-agent/v1\nname: Bad\nservices: {}\n")
    result = runner.invoke(export, ["kube", str(bad)])
    assert result.exit_code == 2 and "bad.yaml:2: name:" in result.output
    out = tmp_path / "k.yaml"
    result = runner.invoke(export, ["kube", example, "--deployment", "-o", str(out)])
    assert result.exit_code == 0 and "kind: Deployment" in out.read_text()


# ---------------------------------------------------------------- podman kube play


@pytest.mark.e2e
@pytest.mark.slow
def test_podman_kube_play_runs_the_avatar_stack(tmp_path: Path, standin_images: dict[str, str]) -> None:
    """The exported avatar stack (on free ports, via an overlay) comes up under `podman kube play`."""
    name = f"kx-{os.urandom(3).hex()}"
    ports = {"mas": free_port(), "sig": free_port(), "riva": free_port(), "turn": free_port("udp")}
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "pod": {
                    "ports": [
                        f"{ports['mas']}:8000",
                        f"{ports['sig']}:8080",
                        f"{ports['riva']}:50051",
                        f"{ports['turn']}:3478/udp",
                    ]
                },
                "secrets": {"openai-api-key": {"file": str(tmp_path / "openai.key")}},
                "services": {
                    "riva": {"health": {"grpc": {"port": ports["riva"]}}},
                    "mas": {"health": {"http": {"port": ports["mas"]}}},
                    "signaling": {"health": {"websocket": {"port": ports["sig"]}}},
                    "turn": {
                        "command": ["-n", "--listening-port=3478", "--no-cli"],
                        "volumes": [],  # the stand-in needs no secret config file
                        "health": {"stun": {"port": ports["turn"]}},
                    },
                },
            }
        )
    )
    out = tmp_path / "stack.yaml"
    result = CliRunner().invoke(
        export, ["kube", str(ROOT / "examples" / "sparc-avatar.yaml"), "-f", str(overlay), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    secret = f"{name}-openai-api-key"
    payload = json.dumps({"value": base64.b64encode(b"sk-test-kube").decode()})
    podman("secret", "rm", secret, check=False)  # a stale one from an aborted run
    run(["podman", "secret", "create", secret, "-"], input=payload)
    try:
        play = podman("kube", "play", str(out), check=False)
        assert play.returncode == 0, play.stderr
        listed = podman("ps", "--filter", f"pod={name}", "--format", "{{.Names}}").stdout.split()
        running = [n for n in listed if not n.endswith("-infra")]
        assert sorted(running) == sorted(f"{name}-{s}" for s in ("riva", "mas", "signaling", "turn", "unity"))
        wait_for(lambda: grpc_health(ports["riva"]) == 1, 30, what="riva gRPC SERVING")
        wait_for(lambda: http_get(ports["mas"], "/health")[1] == 200, 30, what="mas /health")
        wait_for(lambda: ws_handshake(ports["sig"]) == (101, True), 30, what="signaling WebSocket")
        wait_for(lambda: stun_binding(ports["turn"]), 30, what="turn STUN")
        env = podman("exec", f"{name}-mas", "printenv", "OPENAI_API_KEY").stdout
        assert env.strip() == "sk-test-kube"
    finally:
        podman("kube", "down", str(out), check=False)
        podman("secret", "rm", secret, check=False)
        podman("volume", "rm", "-f", f"{name}-riva-models", check=False)
    assert not podman(
        "ps", "-a", "--filter", f"pod={name}", "--format", "{{.Names}}", check=False
    ).stdout.strip()


@pytest.mark.unit
def test_a_oneshot_is_an_init_container_where_it_fits_and_a_noted_container_where_not(tmp_path: Path) -> None:
    pod = yaml.safe_load(_export("loader", KubeOptions()).split("---\n")[2])["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["fetch-models"]  # runs before the server
    assert [c["name"] for c in pod["containers"]] == ["server"]
    assert "depends on fetch-models" not in _export("loader", KubeOptions())  # enforced: no such note

    # a one-shot that waits for a running service cannot run before it: a container, and a note
    path = _profile(
        tmp_path,
        {
            "services": {
                "db": {"image": "localhost/db:1"},
                "seed": {"image": "localhost/seed:1", "oneshot": True, "depends_on": {"db": "started"}},
            }
        },
    )
    text = export_kube(load_profile(str(path)).profile)
    spec = yaml.safe_load(text.split("---\n")[1])["spec"]
    assert "initContainers" not in spec and [c["name"] for c in spec["containers"]] == ["db", "seed"]
    assert "# seed: one-shot kept as a container (an initContainer runs before db is up)" in text
