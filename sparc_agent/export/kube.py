"""Profile -> Kubernetes YAML: one Pod (or Deployment), PersistentVolumeClaims, Services.

What Kubernetes cannot say is written as `#` comments above the object it concerns. Secrets are only
referenced (`secretKeyRef` to `<stack>-<secret>`, key `value`); the header says how to create them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from sparc_agent.export import container_port, host_ip, is_loopback, port_pairs, source_label
from sparc_agent.export.shell import sh_path, sh_quote
from sparc_agent.probes import ExecSpec, GrpcSpec, HttpSpec, StunSpec, WebSocketSpec
from sparc_agent.probes.kinds import KINDS
from sparc_agent.profile.model import (
    Health,
    Mount,
    Profile,
    Service,
)
from sparc_agent.profile.names import Names
from sparc_agent.profile.rules import start_order

SECRET_KEY = "value"
PVC_SIZE = "10Gi"  # the profile has no size for a volume
PART_OF = "app.kubernetes.io/name"
ServiceType = Literal["ClusterIP", "NodePort"]


@dataclass(frozen=True)
class KubeOptions:
    deployment: bool = False
    replicas: int = 1
    service_type: ServiceType = "ClusterIP"


@dataclass
class _Doc:
    body: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def k8s_literal(value: str) -> str:
    """Kubernetes expands `$(VAR)` and turns `$$` into `$` in command, args and env values.

    A `$` followed by `(` or `$` is doubled so the container sees the profile's literal text;
    any other `$` is left alone (Kubernetes leaves it alone too), so ordinary values stay readable.
    """
    out = []
    for i, c in enumerate(value):
        out.append("$$" if c == "$" and value[i + 1 : i + 2] in ("(", "$") else c)
    return "".join(out)


def cpu_quantity(cpus: float) -> str:
    return str(int(cpus)) if float(cpus).is_integer() else f"{math.ceil(cpus * 1000)}m"


def memory_quantity(size: int) -> str:
    for suffix, unit in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _seconds(value: float) -> int:
    """Kubernetes probe timings are whole seconds, at least 1."""
    return max(1, math.ceil(value))


# ---------------------------------------------------------------- probes


def _probe_action(profile: Profile, name: str, health: Health, notes: list[str]) -> dict[str, Any]:
    probe = health.spec
    if isinstance(probe, ExecSpec):
        return {"exec": {"command": list(probe.command)}}
    inner = container_port(profile, probe.port, KINDS[health.kind].transport)
    if isinstance(probe, HttpSpec):
        lo, hi = probe.status
        if (lo, hi) != (200, 399):
            notes.append(f"{name}: http probe wants status {lo}-{hi}; Kubernetes accepts 200-399")
        return {"httpGet": {"path": probe.path, "port": inner}}
    if isinstance(probe, GrpcSpec):
        return {"grpc": {"port": inner, **({"service": probe.service} if probe.service else {})}}
    if isinstance(probe, WebSocketSpec):
        notes.append(
            f"{name}: websocket probe -> tcpSocket: Kubernetes counts only 200-399 as healthy, never"
            " 101 Switching Protocols, so the WebSocket handshake itself is not checked"
        )
    elif isinstance(probe, StunSpec):
        notes.append(
            f"{name}: stun probe (udp {probe.port}) -> tcpSocket on {inner}: Kubernetes has no UDP probe;"
            " this assumes the server also listens on TCP (coturn does unless --no-tcp), and checks"
            " neither UDP nor a STUN answer"
        )
    return {"tcpSocket": {"port": inner}}


def _probes(profile: Profile, name: str, svc: Service, notes: list[str]) -> dict[str, Any]:
    health = svc.health
    if health is None:
        return {}
    action = _probe_action(profile, name, health, notes)
    period, timeout = _seconds(health.interval), _seconds(health.timeout)
    if (period, timeout) != (health.interval, health.timeout):
        notes.append(f"{name}: probe interval/timeout rounded up to whole seconds ({period}s/{timeout}s)")
    timing = {"periodSeconds": period, "timeoutSeconds": timeout, "failureThreshold": health.retries}
    out: dict[str, Any] = {
        "livenessProbe": {**action, **timing},
        "readinessProbe": {**action, **timing},
    }
    if health.start_period > 0:
        # failures during start_period do not count; after it, `retries` in a row do
        budget = math.ceil(health.start_period / period) + health.retries
        out["startupProbe"] = {
            **action,
            "periodSeconds": period,
            "timeoutSeconds": timeout,
            "failureThreshold": budget,
        }
    return out


# ---------------------------------------------------------------- containers


def _gpu_limit(name: str, gpus: str | int | tuple[str, ...], notes: list[str]) -> int:
    if gpus == "all":
        notes.append(
            f"{name}: gpus: all -> nvidia.com/gpu: 1 (Kubernetes cannot ask for every GPU of a node; each"
            " container gets its own GPUs, it does not share them with the other containers)"
        )
        return 1
    if isinstance(gpus, int):
        return gpus
    notes.append(
        f"{name}: gpus {', '.join(gpus)} -> a count of {len(gpus)}: Kubernetes cannot pick device ids"
    )
    return len(gpus)


def _resources(name: str, svc: Service, notes: list[str]) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if svc.resources is not None:
        if svc.resources.cpus is not None:
            limits["cpu"] = cpu_quantity(svc.resources.cpus)
        if svc.resources.memory is not None:
            limits["memory"] = memory_quantity(svc.resources.memory)
        if svc.resources.pids is not None:
            notes.append(f"{name}: pids limit {svc.resources.pids} dropped (a kubelet setting, not per pod)")
    if svc.gpus is not None:
        limits["nvidia.com/gpu"] = _gpu_limit(name, svc.gpus, notes)
    return {"resources": {"limits": limits}} if limits else {}


def _env(profile: Profile, svc: Service) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": k8s_literal(v)} for k, v in svc.env.items()]
    for var, secret in svc.secrets.items():
        ref = {"name": Names(profile.name).secret(secret), "key": SECRET_KEY}
        env.append({"name": var, "valueFrom": {"secretKeyRef": ref}})
    return env


class _Volumes:
    """Pod volumes: one per declared volume (-> PVC) and one per distinct host path (-> hostPath)."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.pod: dict[str, dict[str, Any]] = {}
        self.host: dict[str, str] = {}

    def mount(self, name: str, m: Mount, notes: list[str]) -> dict[str, Any]:
        if m.is_named_volume:
            vol = m.source
            claim = {"claimName": Names(self.profile.name).volume(m.source)}
            self.pod.setdefault(vol, {"name": vol, "persistentVolumeClaim": claim})
        else:
            path = os.path.expanduser(m.source)
            if path != m.source:
                notes.append(f"{name}: host path {m.source} expanded to {path} (the exporting user's home)")
            vol = self.host.setdefault(path, f"host-{len(self.host) + 1}")
            self.pod.setdefault(vol, {"name": vol, "hostPath": {"path": path}})
        if {"z", "Z"} & set(m.options):
            notes.append(f"{name}: SELinux relabel option on {m} dropped (no Kubernetes equivalent)")
        return {"name": vol, "mountPath": m.target, **({"readOnly": True} if "ro" in m.options else {})}


def _container(
    profile: Profile,
    name: str,
    svc: Service,
    ports: list[dict[str, Any]],
    volumes: _Volumes,
    notes: list[str],
    init: list[str],
) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": svc.image}
    if svc.command:
        # the profile's command replaces the image's CMD and keeps its ENTRYPOINT, like `podman run IMAGE ...`
        c["args"] = [k8s_literal(a) for a in svc.command]
    env = _env(profile, svc)
    if env:
        c["env"] = env
    if ports:
        c["ports"] = ports
    c.update(_resources(name, svc, notes))
    mounts = [volumes.mount(name, m, notes) for m in svc.volumes]
    if mounts:
        c["volumeMounts"] = mounts
    c.update(_probes(profile, name, svc, notes))
    unenforced = {d: cond for d, cond in svc.depends_on.items() if d not in init}  # init: done before
    if unenforced:
        deps = ", ".join(f"{d} ({cond})" for d, cond in unenforced.items())
        notes.append(f"{name}: depends on {deps}: not enforced (a pod starts all containers at once)")
    if svc.oneshot and name not in init:
        notes.append(
            f"{name}: one-shot kept as a container (an initContainer runs before {', '.join(unenforced)} is"
            " up): it starts with the others, nothing waits for it, and the pod's restartPolicy applies"
            " to it after it exits"
        )
    return c


def init_containers(profile: Profile) -> list[str]:
    """One-shots that fit as initContainers, in start order: those whose dependencies are all such
    one-shots too (init containers run one at a time, in order, before any other container starts)."""
    init: list[str] = []
    for name in start_order(profile):
        svc = profile.services[name]
        if svc.oneshot and all(dep in init for dep in svc.depends_on):
            init.append(name)
    return init


def _first_container(profile: Profile) -> str:
    """The container that lists the ports no probe names: the first one that keeps running."""
    init = init_containers(profile)
    return next((n for n in profile.services if n not in init), next(iter(profile.services)))


def _owners(profile: Profile) -> dict[tuple[str, int], str]:
    """(protocol, host port) -> the service whose probe uses it: its container lists the port."""
    owners: dict[tuple[str, int], str] = {}
    for name, svc in profile.services.items():
        if svc.health is not None and (proto := KINDS[svc.health.kind].transport) != "exec":
            owners[(proto, svc.health.spec.port)] = name
    return owners


def _container_ports(profile: Profile) -> dict[str, list[dict[str, Any]]]:
    owners = _owners(profile)
    first = _first_container(profile)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in profile.services}
    for spec in profile.pod.ports:
        ip = host_ip(profile, spec)
        for host, inner in port_pairs(spec):
            entry = {
                "containerPort": inner,
                "hostPort": host,
                "hostIP": ip,
                "protocol": spec.protocol.upper(),
            }
            out[owners.get((spec.protocol, host), first)].append(entry)
    return out


# ---------------------------------------------------------------- objects


def _restart_policy(profile: Profile, deployment: bool, notes: list[str]) -> str:
    # a one-shot has no restart policy of its own (it runs once)
    policies = {name: svc.restart.policy for name, svc in profile.services.items() if not svc.oneshot}
    if deployment or "always" in policies.values():
        chosen = "Always"
    elif "on-failure" in policies.values():
        chosen = "OnFailure"
    else:
        chosen = "Never"
    if len(set(policies.values())) > 1 or (deployment and set(policies.values()) != {"always"}):
        per = ", ".join(f"{n}={p}" for n, p in policies.items())
        notes.append(f"restartPolicy {chosen} for the whole pod (per service: {per}; Kubernetes has one)")
    notes.append(
        "restart backoff, max_restarts and window are not translated: the kubelet restarts with its own"
        " backoff (10s doubling to 5m) and never gives up"
    )
    return chosen


def _pod_spec(profile: Profile, deployment: bool, notes: list[str]) -> dict[str, Any]:
    volumes = _Volumes(profile)
    ports = _container_ports(profile)
    init = init_containers(profile)
    containers = {
        name: _container(profile, name, profile.services[name], ports[name], volumes, notes, init)
        for name in start_order(profile)
    }
    spec: dict[str, Any] = {"restartPolicy": _restart_policy(profile, deployment, notes)}
    if init:  # one-shots: each runs to completion, in order, before the containers start
        spec["initContainers"] = [containers[n] for n in init]
    spec["containers"] = [c for n, c in containers.items() if n not in init]
    if volumes.pod:
        spec["volumes"] = list(volumes.pod.values())
    return spec


def _pod_docs(profile: Profile, options: KubeOptions) -> _Doc:
    notes: list[str] = []
    labels = {PART_OF: profile.name}
    spec = _pod_spec(profile, options.deployment, notes)
    notes.append(
        "hostPort/hostIP publish exactly the profile's pod.ports on the node (what `podman kube play`"
        " uses); Kubernetes clients should go through the Service below"
    )
    owned = set(_owners(profile))
    if any((s.protocol, h) not in owned for s in profile.pod.ports for h, _ in port_pairs(s)):
        notes.append(
            f"ports no probe names are listed on the first container ({_first_container(profile)});"
            " any container of the pod may listen on them"
        )
    if not options.deployment:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": profile.name, "labels": labels},
            "spec": spec,
        }
        return _Doc(body, notes)
    if options.replicas > 1 and profile.pod.ports:
        notes.append(f"{options.replicas} replicas each take the same hostPorts: at most one per node")
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": profile.name, "labels": labels},
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }
    return _Doc(body, notes)


def _pvc_docs(profile: Profile) -> list[_Doc]:
    docs = []
    for name, decl in profile.volumes.items():
        notes = [f"volume {name}: size {PVC_SIZE} is a placeholder (the profile gives none)"]
        if decl.driver or decl.options:
            notes.append(f"volume {name}: podman driver/options not translated: choose a storageClassName")
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": Names(profile.name).volume(name), "labels": {PART_OF: profile.name}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": PVC_SIZE}}},
        }
        docs.append(_Doc(body, notes))
    return docs


def _service_docs(profile: Profile, service_type: ServiceType) -> list[_Doc]:
    public: list[dict[str, Any]] = []
    local: list[dict[str, Any]] = []
    for spec in profile.pod.ports:
        ip = host_ip(profile, spec)
        for host, inner in port_pairs(spec):
            entry = {
                "name": f"{spec.protocol}-{host}",
                "port": host,
                "targetPort": inner,
                "protocol": spec.protocol.upper(),
            }
            (local if service_type == "NodePort" and is_loopback(ip) else public).append(entry)
    docs = []
    if public:
        notes = []
        if service_type == "NodePort":
            notes.append(
                "NodePort: every node listens on an allocated port (30000-32767 by default), not on the"
                " profile's host port; ports the profile binds to loopback are in the -local Service"
            )
        docs.append(_Doc(_service(profile, profile.name, service_type, public), notes))
    if local:
        notes = [
            "ports the profile publishes on loopback only: reachable inside the cluster, not from outside"
        ]
        docs.append(_Doc(_service(profile, Names(profile.name).local_service, "ClusterIP", local), notes))
    return docs


def _service(profile: Profile, name: str, kind: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {PART_OF: profile.name}},
        "spec": {"type": kind, "selector": {PART_OF: profile.name}, "ports": ports},
    }


def _secret_help(profile: Profile) -> list[str]:
    if not profile.secrets:
        return []
    lines = [
        "Secrets are referenced, never included. Create them before applying this file:",
    ]
    for name, decl in profile.secrets.items():
        obj = Names(profile.name).secret(name)
        if decl.file is not None:
            src = sh_path(decl.file)
            lines.append(f"  kubectl create secret generic {obj} --from-file={SECRET_KEY}={src}")
            b64 = f"base64 -w0 < {src}"
        else:
            var = f'"${decl.env}"'
            lines.append(
                f"  printf %s {var} | kubectl create secret generic {obj} --from-file={SECRET_KEY}=/dev/stdin"
            )
            b64 = f"printf %s {var} | base64 -w0"
        lines.append(
            f'  (podman kube play: printf \'{{"{SECRET_KEY}":"%s"}}\' "$({b64})"'
            f" | podman secret create {sh_quote(obj)} -)"
        )
    return lines


def export_kube(profile: Profile, options: KubeOptions = KubeOptions(), source: str = "") -> str:
    """The YAML text (several documents) for `profile`."""
    header = [
        f"Generated by `sparc-agent export kube` from {source_label(source)}: stack {profile.name}.",
        "Edit the profile and export again rather than editing this file.",
        *_secret_help(profile),
    ]
    docs = [*_pvc_docs(profile), _pod_docs(profile, options), *_service_docs(profile, options.service_type)]
    parts = ["".join(f"# {line}\n".replace("# \n", "#\n") for line in header)]
    for doc in docs:
        text = yaml.safe_dump(doc.body, sort_keys=False, default_flow_style=None, width=1000)
        parts.append("---\n" + "".join(f"# {n}\n" for n in doc.notes) + text)
    return "".join(parts)
