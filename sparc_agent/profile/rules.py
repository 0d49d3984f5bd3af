"""Rules that relate one part of a profile to another, each naming the key it is about."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from sparc_agent.probes.kinds import KINDS
from sparc_agent.profile import media, names
from sparc_agent.profile.model import Profile
from sparc_agent.profile.source import Path


@dataclass(frozen=True)
class Finding:
    path: Path
    message: str


def errors(profile: Profile) -> Iterator[Finding]:
    yield from _references(profile)
    yield from _published_ports(profile)[1]
    yield from _cycles(profile)
    yield from _oneshots(profile)
    yield from _gpu_budget_owners(profile)
    if isinstance(profile.gpu.memory, int):
        yield from gpu_budgets(profile, profile.gpu.memory, "gpu.memory")
    for key, why in names.collisions(profile.name, profile.services, profile.volumes):
        yield Finding(key, why)
    yield from (Finding(key, why) for key, why in media.errors(profile))


def warnings(profile: Profile) -> Iterator[Finding]:
    yield from (Finding(key, why) for key, why in media.warnings(profile))
    for name, svc in profile.services.items():
        ref = svc.image.split("@")[0]
        tail = ref.rsplit("/", 1)[-1]
        untagged = ":" not in tail or tail.endswith(":latest")
        if untagged and "@" not in svc.image and not svc.image.startswith("localhost/"):
            yield Finding(
                ("services", name, "image"), "no pinned tag: `latest` changes under you (pin a version)"
            )
    used_secrets = {s for svc in profile.services.values() for s in svc.secrets.values()}
    used_secrets |= media.probe_secrets(profile)
    for name in profile.secrets.keys() - used_secrets:
        yield Finding(("secrets", name), "declared but no service uses it")
    used_volumes = {m.source for svc in profile.services.values() for m in svc.volumes if m.is_named_volume}
    for name in profile.volumes.keys() - used_volumes:
        yield Finding(("volumes", name), "declared but no service mounts it")
    if profile.pod.bind in ("0.0.0.0", "::"):
        for i, port in enumerate(profile.pod.ports):
            if port.host_ip is None:  # an address written on the port itself is deliberate
                yield Finding(("pod", "ports", i), f"{port} listens on every interface (pod.bind)")
    yield from open_relays(profile)


TURN_PORTS = (3478, 5349)  # STUN/TURN, and TURN over TLS
# coturn's flags that make clients authenticate; without one, anyone who reaches the port may relay
TURN_AUTH_FLAGS = ("--use-auth-secret", "--static-auth-secret", "--lt-cred-mech", "-a", "--oauth")


def turn_services(profile: Profile) -> dict[str, int | None]:
    """Services that serve STUN/TURN (a stun probe, a coturn image, or `turnserver` in the command),
    each with its probe's host port (None without a stun probe)."""
    found: dict[str, int | None] = {}
    for name, svc in profile.services.items():
        health = svc.health
        probe_port: int | None = (
            getattr(health.probe, "port")  # noqa: B009 - a stun probe has one
            if health is not None and health.kind == "stun"
            else None
        )
        coturn = "coturn" in svc.image.split("@")[0].split(":")[0].rsplit("/", 1)[-1]
        if probe_port or coturn or any(w.endswith("turnserver") for w in svc.command or ()):
            found[name] = probe_port
    return found


def _has_auth(command: tuple[str, ...] | None) -> bool:
    return any(w.split("=", 1)[0] in TURN_AUTH_FLAGS for w in command or ())


def open_relays(profile: Profile) -> Iterator[Finding]:
    """A TURN/STUN port published beyond loopback by a service whose command asks for no auth."""
    for name, probe_port in turn_services(profile).items():
        if _has_auth(profile.services[name].command):
            continue
        for i, spec in enumerate(profile.pod.ports):
            address = spec.host_ip or profile.pod.bind
            turn = any(spec.container[0] <= p <= spec.container[1] for p in TURN_PORTS)
            probed = probe_port is not None and spec.host[0] <= probe_port <= spec.host[1]
            if (turn or probed) and not ipaddress.ip_address(address).is_loopback:
                yield Finding(
                    ("pod", "ports", i),
                    f"{spec} publishes TURN/STUN of service {name} on {address}, and its command has no"
                    f" auth flag ({', '.join(TURN_AUTH_FLAGS[:3])}): anyone who reaches it can relay"
                    " through this host; add --use-auth-secret with a secret, or publish it on 127.0.0.1",
                )


def _references(profile: Profile) -> Iterator[Finding]:
    for name, svc in profile.services.items():
        for env, secret in svc.secrets.items():
            if secret not in profile.secrets:
                yield Finding(
                    ("services", name, "secrets", env),
                    f"secret {secret!r} is not declared (declared: {_names(profile.secrets)})",
                )
            if env in svc.env:
                yield Finding(("services", name, "secrets", env), f"{env} is also set in env (give it once)")
        for i, mount in enumerate(svc.volumes):
            if mount.is_named_volume and mount.source not in profile.volumes:
                yield Finding(
                    ("services", name, "volumes", i),
                    f"volume {mount.source!r} is not declared (declared: {_names(profile.volumes)})",
                )
        for dep, condition in svc.depends_on.items():
            where = ("services", name, "depends_on", dep)
            if dep == name:
                yield Finding(where, "a service cannot depend on itself")
            elif dep not in profile.services:
                yield Finding(where, f"no service {dep!r} (services: {_names(profile.services)})")
            elif profile.services[dep].oneshot or condition == "completed":
                continue  # _oneshots says what is wrong with these
            elif condition == "healthy" and profile.services[dep].health is None:
                yield Finding(
                    where, f"{dep!r} has no health probe, so it can never be `healthy` (use `started`)"
                )


def _oneshots(profile: Profile) -> Iterator[Finding]:
    """A one-shot runs to completion once per generation: no probe, no restarts, and what depends
    on it waits for `completed`, which only a one-shot can reach."""
    for name, svc in profile.services.items():
        if svc.oneshot and svc.health is not None:
            yield Finding(
                ("services", name, "health"),
                "a one-shot has no health probe: it is done when it exits 0 (remove `health`)",
            )
        if svc.oneshot and "restart" in svc.model_fields_set:
            yield Finding(
                ("services", name, "restart"),
                "a one-shot is never restarted: it runs once per generation and its failure fails the"
                " apply (remove `restart`)",
            )
        for dep, condition in svc.depends_on.items():
            other = profile.services.get(dep)
            if other is None or dep == name:
                continue
            where = ("services", name, "depends_on", dep)
            if other.oneshot and condition != "completed":
                yield Finding(
                    where, f"{dep!r} is a one-shot: depend on it with `completed`, not `{condition}`"
                )
            elif condition == "completed" and not other.oneshot:
                yield Finding(
                    where,
                    f"{dep!r} keeps running, so it never `completed` (use `started` or `healthy`, or give"
                    f" {dep!r} `oneshot: true`)",
                )


def probe_pod(profile: Profile, name: str) -> str | None:
    """The pod in whose network namespace the service's probe runs, or None: on the host.

    A published port is probed on the host, the way a client there reaches it; any other port is
    probed where the service listens, inside the pod, so nothing is published for the agent's sake."""
    health = profile.services[name].health
    if health is None or (protocol := KINDS[health.kind].transport) == "exec":
        return None
    port: int = getattr(health.probe, "port")  # noqa: B009 - every non-exec probe has one
    return None if (protocol, port) in _published_ports(profile)[0] else names.Names(profile.name).pod


def _published_ports(profile: Profile) -> tuple[dict[tuple[str, int], int], list[Finding]]:
    """(protocol, host port) -> index in pod.ports, and the entries that publish a port twice."""
    seen: dict[tuple[str, int], int] = {}
    clashes: list[Finding] = []
    for i, spec in enumerate(profile.pod.ports):
        for port in range(spec.host[0], spec.host[1] + 1):
            key = (spec.protocol, port)
            if key in seen:
                clashes.append(
                    Finding(
                        ("pod", "ports", i),
                        f"host port {port}/{spec.protocol} is already in pod.ports[{seen[key]}]",
                    )
                )
                break
            seen[key] = i
    return seen, clashes


def _cycles(profile: Profile) -> Iterator[Finding]:
    graph = {
        n: [d for d in s.depends_on if d in profile.services and d != n] for n, s in profile.services.items()
    }
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    reported: set[frozenset[str]] = set()

    def visit(node: str, path: list[str]) -> Iterator[Finding]:
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    yield Finding(
                        ("services", node, "depends_on", dep), "dependency cycle: " + " -> ".join(cycle)
                    )
            elif dep not in state:
                yield from visit(dep, [*path, dep])
        state[node] = 2

    for node in graph:
        if node not in state:
            yield from visit(node, [node])


def gpu_budget_of(profile: Profile, name: str) -> int | None:
    resources = profile.services[name].resources
    return resources.gpu_memory if resources is not None else None


def _gpu_budget_owners(profile: Profile) -> Iterator[Finding]:
    for name, svc in profile.services.items():
        if gpu_budget_of(profile, name) is not None and svc.gpus is None:
            yield Finding(
                ("services", name, "resources", "gpu_memory"),
                "a GPU memory budget needs `gpus` on the service",
            )


def gpu_budgets(profile: Profile, total: int, source: str) -> Iterator[Finding]:
    """The budgets must fit in the GPU they share: the error names the budget that overflows it."""
    used, parts = 0, []
    for name in start_order(profile):
        budget = gpu_budget_of(profile, name)
        if budget is None:
            continue
        used += budget
        parts.append(f"{name} {_gib(budget)}")
        if used > total:
            where = (
                ("gpu", "memory") if source == "gpu.memory" else ("services", name, "resources", "gpu_memory")
            )
            yield Finding(
                where,
                f"GPU memory budgets add up to {_gib(used)} ({' + '.join(parts)}), more than the"
                f" {_gib(total)} of the GPU ({source}); lower a budget or use a larger GPU",
            )
            return


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"


def _names(mapping: Mapping[str, object]) -> str:
    return ", ".join(sorted(mapping)) or "none"


def start_order(profile: Profile) -> list[str]:
    """Services in dependency order (dependencies first); ties keep profile order."""
    order: list[str] = []
    done: set[str] = set()

    def add(name: str) -> None:
        if name in done:
            return
        done.add(name)
        for dep in profile.services[name].depends_on:
            add(dep)
        order.append(name)

    for name in profile.services:
        add(name)
    return order


def port_publishers(profile: Profile) -> dict[str, str]:
    """port_publisher of every published host port, by names.port_key: apply records it in each
    generation's plan, so the agent can name who publishes a port it cannot bind."""
    return {
        names.port_key(protocol, port): _publisher(profile, index, protocol, port)
        for (protocol, port), index in _published_ports(profile)[0].items()
    }


def port_publisher(profile: Profile, protocol: str, port: int) -> str:
    """Who publishes host port `port`/`protocol`: its pod.ports entry and the service probed on it."""
    index = _published_ports(profile)[0].get((protocol, port))
    return "not in pod.ports" if index is None else _publisher(profile, index, protocol, port)


def _publisher(profile: Profile, index: int, protocol: str, port: int) -> str:
    spec = profile.pod.ports[index]
    services = [
        name
        for name, svc in profile.services.items()
        if svc.health is not None
        and KINDS[svc.health.kind].transport == protocol
        and getattr(svc.health.probe, "port", None) == port
    ]
    owner = f"service {', '.join(services)}" if services else "the pod (no service probes it)"
    container = spec.container[0] + port - spec.host[0]
    return f"{owner}, pod.ports[{index}] -> container port {container}/{protocol}"
