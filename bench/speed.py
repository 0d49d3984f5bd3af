#!/usr/bin/env python3
"""Speed: sparc-agent and its peers, side by side in one run, on the real test hosts and stand-ins.

Every figure is measured here; none comes from a constant. Each round runs every peer once, in a
shuffled order (so drift on a loaded machine hits all of them alike); figures are medians over rounds.

Bring-up to all healthy (test host A: podman 4.3, the 5-service avatar stack, the same probes for all,
run by this process against the published ports / `podman exec`):
  loop       a bash script: `podman pod create` + one `podman run -d --init` per service, in order
  quadlet    the files `sparc-agent render` writes, copied in, `daemon-reload`, `start STACK.target`
  compose    podman-compose (PyPI) `up -d` of the same stack as a compose file (depends_on as order)
  agent      `sparc-agent apply`, health-gated (its exit is its verdict: all healthy), from nothing on disk;
             then a no-op re-apply: its wall time and the restarts it caused (MainPID/NRestarts)
Recovery, a 2-service stack (signaling: websocket, turn: stun), probes every 2 s, timeout 1 s, 2 retries
for every peer; measured from the signal to the first answer the host gets from the new container:
  hung   SIGSTOP of the service's main process (the child of the container's init):
         agent (A: `sparc-agent run`), quadlet HealthCmd + HealthOnFailure=kill + Restart=always and
         HealthOnFailure=restart (podman's own restart) on test host B (podman 5.4; podman 4.3 never
         recovers: its health timers need the system manager)
  crash  kill -9 of the main process: agent (A), plain Restart= (A: the same rendered units, no agent),
         quadlet with health checks + Restart=always (B)
Idle: the agent supervising the 5-service stack with the example's timing: peak RSS and CPU (its own, and
with its children, e.g. `podman exec` of the exec probe) over --idle seconds.

Last line: `speed: bringup_ratio=R quadlet_ratio=Q compose_ratio=C hung_s=H quadlet_hung_s=QH
crash_ratio=CR noop_ms=N rss_mb=M cpu_pct=U` (ratios to the loop; CR = agent / plain Restart=).
Needs root, scripts/test-host-setup.sh --images, the trixie root (scripts/trixie-root-setup.sh) and
podman-compose (the `test` extra). Run under the e2e lock: flock /tmp/sparc-e2e.lock python bench/speed.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import support.testhost as testhost
import support.trixiehost as trixiehost
from support.stackfiles import SPARC_AGENT, avatar_profile, unit_props, write_profile

from sparc_agent.probes import ExecSpec, ProbeOutcome, run_probe
from sparc_agent.probes.health import probe_spec
from sparc_agent.profile.load import load_profile
from sparc_agent.state.paths import Paths

# the console script a user runs (a plain or editable install puts it beside the interpreter)
_SCRIPT = Path(sys.executable).parent / "sparc-agent"
AGENT = [str(_SCRIPT)] if _SCRIPT.is_file() else SPARC_AGENT
COMPOSE = shutil.which("podman-compose", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
TIMING = {"interval": "2s", "timeout": "1s", "retries": 2}  # every recovery peer's probe timing
WINDOW_S = 10  # the agent's restart window in the recovery stack: each measured failure is a first one


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def quiet(argv: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, env=env, capture_output=True, timeout=120, check=False)


# ---------------------------------------------------------------- waiting for health, the same for all


def health_targets(profile: Path, container: Callable[[str], str]) -> dict[str, tuple[Any, str]]:
    """service -> (its probe, the container an exec probe runs in), from the profile's `health:`."""
    services = load_profile(str(profile)).profile.services
    return {n: (probe_spec(s.health), container(n)) for n, s in services.items() if s.health}


def wait_healthy(targets: dict[str, tuple[Any, str]], timeout: float = 120) -> None:
    """Return when every probe has passed once (each service polled every 50 ms, all at once)."""
    deadline = time.monotonic() + timeout

    async def one(name: str, spec: Any, container: str) -> None:
        while (await run_probe(spec, container=container)).outcome is not ProbeOutcome.OK:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} ({container}) never healthy")
            await asyncio.sleep(0.05)

    async def every() -> None:
        await asyncio.gather(*(one(n, s, c) for n, (s, c) in targets.items()))

    asyncio.run(every())


# ---------------------------------------------------------------- bring-up peers


def example_timing(doc: dict[str, Any]) -> dict[str, Any]:
    """The example profile's probe timing (signaling every 2 s, the rest at the default 5 s)."""
    for name, svc in doc["services"].items():
        svc["health"].pop("interval", None)
        if name == "signaling":
            svc["health"]["interval"] = "2s"
    return doc


def loop_script(doc: dict[str, Any]) -> str:
    """What people run by hand: create the pod, `podman run -d` every service, in the profile's order."""
    return "set -e\n" + "\n".join(loop_lines(doc).values()) + "\n"


def loop_lines(doc: dict[str, Any]) -> dict[str, str]:
    """The loop's commands: "" -> the pod's, then each service -> its `podman run`."""
    name = doc["name"]
    ports = " ".join(f"-p 127.0.0.1:{p}" for p in doc["pod"]["ports"])
    lines = {"": f"podman pod create --name {name} {ports} >/dev/null"}
    for svc_name, svc in doc["services"].items():
        args = ["podman", "run", "-d", "--init", "--pod", name, "--name", f"{name}-{svc_name}"]
        for key, value in svc.get("env", {}).items():
            args += ["-e", f"{key}={value}"]
        if svc.get("secrets"):
            args += ["-e", "OPENAI_API_KEY=sk-test-not-a-real-key"]
        if svc.get("gpus"):
            args += ["--device", "nvidia.com/gpu=all"]
        for volume in svc.get("volumes", []):
            args += ["-v", f"{name}-{volume}"]  # "riva-models:/data" -> a named volume of this stack
        args += [svc["image"], *svc.get("command", [])]
        lines[svc_name] = shlex.join(args) + " >/dev/null"
    return lines


def compose_file(doc: dict[str, Any]) -> dict[str, Any]:
    """The stack as a compose file. Like the pod, one network namespace: the first service publishes the
    ports, the others join it (network_mode service:FIRST), so `localhost` in the env means the same.
    (Service names over DNS do not work on this test host: netavark starts aardvark-dns through the
    system manager, which the host lacks.)"""
    name = doc["name"]
    first = next(iter(doc["services"]))
    services: dict[str, Any] = {}
    for svc_name, svc in doc["services"].items():
        env = dict(svc.get("env", {}))
        if svc.get("secrets"):
            env["OPENAI_API_KEY"] = "sk-test-not-a-real-key"
        entry: dict[str, Any] = {
            "image": svc["image"],
            "container_name": f"{name}-{svc_name}",
            "init": True,
            "environment": env,
        }
        if svc_name == first:
            entry["ports"] = [f"127.0.0.1:{p}" for p in doc["pod"]["ports"]]
        else:
            entry["network_mode"] = f"service:{first}"
        if svc.get("command"):
            entry["command"] = svc["command"]
        if svc.get("gpus"):
            entry["devices"] = ["nvidia.com/gpu=all"]
        if svc.get("volumes"):
            entry["volumes"] = svc["volumes"]
        deps = [*({first} - {svc_name}), *svc.get("depends_on", {})]
        if deps:
            entry["depends_on"] = list(dict.fromkeys(deps))
        services[svc_name] = entry
    return {"name": name, "services": services, "volumes": {v: {} for v in doc.get("volumes", {})}}


@dataclass
class BringUp:
    """One peer's manager, profile and figures."""

    peer: str
    mgr: testhost.UserManager
    tmp: Path
    doc: dict[str, Any] = field(default_factory=dict)
    profile: Path = Path()
    targets: dict[str, tuple[Any, str]] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    noop_ms: list[float] = field(default_factory=list)
    noop_restarts: int = 0
    files: dict[Path, bytes] = field(default_factory=dict)  # quadlet: the rendered files
    timings: str = ""  # agent: the last fresh apply's --timings
    noop_timings: str = ""  # and the last no-op's
    all_timings: list[str] = field(default_factory=list)  # every fresh apply's, for the medians
    exec_ms: list[float] = field(default_factory=list)  # an exec probe alone, after each no-op

    def prepare(self) -> None:
        self.doc = example_timing(avatar_profile(self.mgr, self.tmp))
        self.profile = write_profile(self.doc, self.tmp / f"{self.peer}.yaml")
        self.targets = health_targets(self.profile, lambda s: f"{self.mgr.name}-{s}")
        if self.peer == "quadlet":
            out = self.tmp / "rendered"
            run([*AGENT, "render", str(self.profile), "--out", str(out)], env=self.mgr.environ())
            (out / "systemd/user/sparc-agent.service").unlink()
            self.files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
            key = f"{self.mgr.name}-openai-api-key"
            subprocess.run(
                ["podman", "secret", "create", key, "-"], input=b"sk-test-not-a-real-key\n", check=True,
                capture_output=True,
            )  # fmt: skip
        if self.peer == "compose":
            (self.tmp / "compose.yaml").write_text(yaml.safe_dump(compose_file(self.doc), sort_keys=False))

    def up(self) -> float:
        env = self.mgr.environ()
        t0 = time.monotonic()
        if self.peer == "loop":
            run(["bash", "-c", loop_script(self.doc)])
        elif self.peer == "gated":
            self.gated_loop()
        elif self.peer == "quadlet":
            for rel, data in self.files.items():
                (self.mgr.config_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                (self.mgr.config_dir / rel).write_bytes(data)
            self.mgr.systemctl("daemon-reload")
            self.mgr.systemctl("start", f"{self.mgr.name}.target")
        elif self.peer == "compose":
            assert COMPOSE is not None
            run([COMPOSE, "-f", str(self.tmp / "compose.yaml"), "up", "-d"], env=env)
        else:
            done = subprocess.run(
                [*AGENT, "apply", "--timings", str(self.profile)], env=env, capture_output=True, text=True
            )
            elapsed = time.monotonic() - t0  # apply exits 0 only when every probe passed
            if done.returncode != 0:
                raise RuntimeError(f"apply exited {done.returncode}:\n{done.stdout}{done.stderr}")
            self.timings = done.stderr
            self.all_timings.append(done.stderr.replace(self.mgr.name, "STACK"))
            wait_healthy(self.targets, 10)  # ... which the bench checks, not timed
            self.seconds.append(elapsed)
            self.noop()
            self.exec_alone()
            return elapsed
        wait_healthy(self.targets)
        self.seconds.append(time.monotonic() - t0)
        return self.seconds[-1]

    def gated_loop(self) -> None:
        """The loop, but before each `podman run` wait (polling every 50 ms, as wait_healthy) for what the
        profile says it needs healthy: what the health gate alone costs, apart from sparc-agent's own
        overhead. A figure to explain the agent's, not its measure: bringup_ratio stays against the loop."""
        for svc_name, line in loop_lines(self.doc).items():
            deps = self.doc["services"].get(svc_name, {}).get("depends_on", {})
            wait_healthy({d: self.targets[d] for d, cond in deps.items() if cond == "healthy"})
            run(["bash", "-c", line])

    def exec_alone(self) -> None:
        """One exec probe (a `podman exec`) against the running stack: the no-op's floor."""
        for spec, container in self.targets.values():
            if isinstance(spec, ExecSpec):
                t0 = time.monotonic()
                result = asyncio.run(run_probe(spec, container=container))
                if result.outcome is ProbeOutcome.OK:
                    self.exec_ms.append((time.monotonic() - t0) * 1000)

    def noop(self) -> None:
        units = [f"{self.mgr.name}-{s}.service" for s in self.doc["services"]]
        before = {u: unit_props(self.mgr, u) for u in units}
        t0 = time.monotonic()
        done = subprocess.run(
            [*AGENT, "apply", "--timings", str(self.profile)],
            env=self.mgr.environ(),
            capture_output=True,
            text=True,
        )
        self.noop_ms.append((time.monotonic() - t0) * 1000)
        if done.returncode != 0 or "all unchanged" not in done.stdout:
            raise RuntimeError(f"the re-apply was not a no-op:\n{done.stdout}{done.stderr}")
        self.noop_timings = done.stderr
        after = {u: unit_props(self.mgr, u) for u in units}
        self.noop_restarts += sum(
            (before[u]["MainPID"] != after[u]["MainPID"])
            + int(after[u]["NRestarts"])
            - int(before[u]["NRestarts"])
            for u in units
        )

    def down(self) -> None:
        name, env = self.mgr.name, self.mgr.environ()
        if self.peer == "quadlet":
            self.mgr.systemctl("stop", f"{name}.target", f"{name}-pod.service", check=False)
            for rel in self.files:
                (self.mgr.config_dir / rel).unlink(missing_ok=True)
            self.mgr.systemctl("daemon-reload")
            self.mgr.systemctl("reset-failed", check=False)
        elif self.peer == "compose":
            assert COMPOSE is not None
            quiet([COMPOSE, "-f", str(self.tmp / "compose.yaml"), "down", "-v", "-t", "0"], env=env)
            quiet(["podman", "pod", "rm", "-f", "-t", "0", f"pod_{name}"])
            quiet(["podman", "network", "rm", "-f", f"{name}_default"])
        elif self.peer == "agent":
            quiet([*AGENT, "down", name, "--purge"], env=env)
            shutil.rmtree(Paths.from_env(env).stack_state(name), ignore_errors=True)
        quiet(["podman", "pod", "rm", "-f", "-t", "0", name])
        quiet(["podman", "volume", "rm", "-f", f"{name}-riva-models", f"{name}_riva-models", "riva-models"])


# ---------------------------------------------------------------- recovery peers


@dataclass
class Target:
    """A service to break: how to reach its podman, and how to ask it whether it answers."""

    peer: str
    container: str
    podman: Callable[..., subprocess.CompletedProcess[str]]
    answers: Callable[[], bool]
    agent_state: Callable[[], str] | None = None  # the agent's view, when an agent supervises it
    podman_health: bool = False  # podman's own health checks watch it: wait for "healthy" too
    last_failure: float = 0.0

    def main_pid(self) -> int:
        init = int(self.podman("inspect", "-f", "{{.State.Pid}}", self.container).stdout.strip())
        children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
        return int(children[0]) if children else init  # the app under the container's init

    def health(self) -> str:
        return self.podman(
            "inspect", "-f", "{{.State.Health.Status}}", self.container, check=False
        ).stdout.strip()

    def ready(self) -> bool:
        return (
            self.answers()
            and (self.agent_state is None or self.agent_state() == "HEALTHY")
            and (not self.podman_health or self.health() == "healthy")
        )


def ws_answers(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return testhost.ws_handshake(port, timeout=0.5) == (101, True)
        except OSError:
            return False

    return check


def stun_answers(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            testhost.stun_binding(port, timeout=0.3)
        except (OSError, RuntimeError):
            return False
        return True

    return check


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def break_and_time(target: Target, how: signal.Signals, timeout: float = 90) -> float:
    """Seconds from the signal to the first answer from a new process."""
    try:
        testhost.wait_for(target.ready, 60, interval=0.1, what=f"{target.peer} {target.container} ready")
    except TimeoutError as exc:
        log = target.podman("inspect", "-f", "{{json .State.Health}}", target.container, check=False).stdout
        raise RuntimeError(f"not healthy before the break: {exc}; podman's health: {log}") from None
    wait = target.last_failure + WINDOW_S + 1 - time.monotonic()
    time.sleep(max(wait, 0) + random.uniform(0, 2))  # a random probe phase, as in real life
    pid = target.main_pid()
    t0 = time.monotonic()
    os.kill(pid, how)
    try:
        testhost.wait_for(
            lambda: gone(pid) and target.answers(), timeout, interval=0.02, what="answers again"
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)  # never recovered: do not leave a frozen process behind
    target.last_failure = time.monotonic()
    return target.last_failure - t0


def recovery_doc(mgr: testhost.UserManager, tmp: Path) -> dict[str, Any]:
    doc = avatar_profile(mgr, tmp)
    ports = doc["pod"]["ports"]
    doc["pod"]["ports"] = [ports[1], ports[3]]
    doc["services"] = {n: doc["services"][n] for n in ("signaling", "turn")}
    for svc in doc["services"].values():
        svc["health"].update(TIMING)
        svc["restart"] = {"window": f"{WINDOW_S}s"}
    doc.pop("secrets")
    doc.pop("volumes")
    return doc


def trixie_quadlets(mgr: trixiehost.TrixieManager, stack: str, on_failure: str) -> tuple[int, int]:
    """Hand-written quadlets: a pod with signaling and turn, podman's health checks with TIMING.

    Each check ends in a plain word: quadlet drops the closing quote of a HealthCmd that ends in one.
    WorkingDir=/ dates from when test host B was a chroot, where `podman exec` (so podman's health
    checks) landed in the host's root and failed to chdir to the image's /app; since the root runs in
    its own mount namespace (tests/support/trixiehost.py) the checks run inside the container, from /."""
    sig, turn = testhost.free_port(), testhost.free_port("udp")
    d = mgr.quadlet_dir
    (d / f"{stack}.pod").write_text(
        f"[Pod]\nPodName={stack}\nPublishPort=127.0.0.1:{sig}:8080\nPublishPort=127.0.0.1:{turn}:3478/udp\n"
    )
    checks = {
        "signaling": 'python3 -c "import urllib.request as u; '
        "u.urlopen('http://127.0.0.1:8080/', timeout=1)\" http",
        "turn": 'python3 -c "import socket, os; s = socket.socket(2, 2); s.settimeout(1); '
        "s.sendto(bytes.fromhex('000100002112a442') + os.urandom(12), ('127.0.0.1', 3478)); "
        's.recv(99)" stun',
    }
    images = {"signaling": trixiehost.IMAGES["signaling"], "turn": trixiehost.IMAGES["coturn"]}
    for svc, check in checks.items():
        (d / f"{stack}-{svc}.container").write_text(
            f"[Container]\nContainerName={stack}-{svc}\nImage={images[svc]}\nPod={stack}.pod\nRunInit=true\nWorkingDir=/\n"
            f"HealthCmd={check}\nHealthInterval=2s\nHealthTimeout=1s\nHealthRetries=2\n"
            f"HealthOnFailure={on_failure}\n[Service]\nRestart=always\n"
        )
    return sig, turn


@contextlib.contextmanager
def recovery_stands(tmp: Path) -> Iterator[dict[str, list[Target]]]:
    """The stacks to break, up and healthy: {"hung": [...], "crash": [...]}."""
    with contextlib.ExitStack() as stack:
        agent_mgr = stack.enter_context(testhost.standalone_manager())
        plain_mgr = stack.enter_context(testhost.standalone_manager())
        # A: the agent's stack, applied and supervised
        doc = recovery_doc(agent_mgr, tmp)
        run([*AGENT, "apply", str(write_profile(doc, tmp / "recovery-agent.yaml"))], env=agent_mgr.environ())
        log = stack.enter_context(open(agent_mgr.root / "agent.log", "wb"))
        proc = stack.enter_context(
            subprocess.Popen([*AGENT, "run", "--no-apply"], env=agent_mgr.environ(), stdout=log, stderr=log)
        )
        stack.callback(proc.kill)
        state_file = Paths.from_env(agent_mgr.environ()).stack_state(agent_mgr.name) / "agent-state.json"

        def agent_state(service: str) -> Callable[[], str]:
            def state() -> str:
                with contextlib.suppress(OSError, ValueError, KeyError):
                    return str(json.loads(state_file.read_text())["services"][service]["state"])
                return "?"

            return state

        a_sig, a_turn = (int(p.split(":")[0].split("/")[0]) for p in doc["pod"]["ports"])
        # A: the same units, no agent: systemd's own Restart=
        pdoc = recovery_doc(plain_mgr, tmp)
        out = tmp / "plain-rendered"
        run([*AGENT, "render", str(write_profile(pdoc, tmp / "recovery-plain.yaml")), "--out", str(out)])
        (out / "systemd/user/sparc-agent.service").unlink()
        shutil.copytree(out, plain_mgr.config_dir, dirs_exist_ok=True)
        plain_mgr.systemctl("daemon-reload")
        plain_mgr.systemctl("start", f"{plain_mgr.name}.target")
        p_turn = int(pdoc["pod"]["ports"][1].split(":")[0].split("/")[0])
        # B: podman 5.4's health checks in quadlets
        root = stack.enter_context(trixiehost.root_mounted())
        trixiehost.load_images(root)
        tx, _ = stack.enter_context(trixiehost.trixie_manager_running(show_logs=False))
        private = root / "run/systemd/private"  # rootful podman runs health timers in "the" system manager
        private.parent.mkdir(parents=True, exist_ok=True)
        private.unlink(missing_ok=True)
        private.symlink_to(tx.run_dir / "systemd/private")
        stack.callback(private.unlink, missing_ok=True)
        k_sig, k_turn = trixie_quadlets(tx, f"{tx.name}-k", "kill")
        r_sig, _ = trixie_quadlets(tx, f"{tx.name}-r", "restart")
        tx.systemctl("daemon-reload")
        tx.systemctl("start", f"{tx.name}-k-pod.service", f"{tx.name}-r-pod.service")
        host_podman = testhost.podman
        yield {
            "hung": [
                Target(
                    "agent",
                    f"{agent_mgr.name}-signaling",
                    host_podman,
                    ws_answers(a_sig),
                    agent_state("signaling"),
                ),
                Target(
                    "quadlet kill", f"{tx.name}-k-signaling", tx.podman, ws_answers(k_sig), podman_health=True
                ),
                Target(
                    "podman restart",
                    f"{tx.name}-r-signaling",
                    tx.podman,
                    ws_answers(r_sig),
                    podman_health=True,
                ),
            ],
            "crash": [
                Target(
                    "agent", f"{agent_mgr.name}-turn", host_podman, stun_answers(a_turn), agent_state("turn")
                ),
                Target("Restart=", f"{plain_mgr.name}-turn", host_podman, stun_answers(p_turn)),
                Target(
                    "quadlet health", f"{tx.name}-k-turn", tx.podman, stun_answers(k_turn), podman_health=True
                ),
            ],
        }


# ---------------------------------------------------------------- idle


def idle_usage(pid: int, seconds: float) -> tuple[float, float, float]:
    """(peak RSS MB, CPU % of one core: its own, with its reaped children) of `pid` over `seconds`."""
    tick = os.sysconf("SC_CLK_TCK")

    def cpu() -> tuple[float, float]:
        f = [int(x) for x in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:15]]
        return (f[0] + f[1]) / tick, (f[0] + f[1] + f[2] + f[3]) / tick

    def rss() -> float:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    (own0, all0), t0, peak = cpu(), time.monotonic(), rss()
    while time.monotonic() - t0 < seconds:
        time.sleep(1)
        peak = max(peak, rss())
    (own1, all1), dt = cpu(), time.monotonic() - t0
    return peak, 100 * (own1 - own0) / dt, 100 * (all1 - all0) / dt


def measure_idle(stand: BringUp, seconds: float) -> tuple[float, float, float]:
    run([*AGENT, "apply", str(stand.profile)], env=stand.mgr.environ())
    state_file = Paths.from_env(stand.mgr.environ()).stack_state(stand.mgr.name) / "agent-state.json"
    proc = subprocess.Popen(
        [*AGENT, "run", "--no-apply"],
        env=stand.mgr.environ(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def all_healthy() -> bool:
            states = json.loads(state_file.read_text())["services"].values()
            return len(states) == len(stand.doc["services"]) and all(s["state"] == "HEALTHY" for s in states)

        testhost.wait_for(all_healthy, 60, what="agent: all HEALTHY")
        time.sleep(2)
        return idle_usage(proc.pid, seconds)
    finally:
        proc.kill()
        proc.wait()
        stand.down()


# ---------------------------------------------------------------- main


def bringup_phase(tmp: Path, runs: int, idle: float) -> tuple[dict[str, BringUp], tuple[float, ...]]:
    with contextlib.ExitStack() as managers:
        stands = []
        for peer in ("loop", "gated", "quadlet", "compose", "agent"):
            mgr = managers.enter_context(testhost.standalone_manager())
            (tmp / peer).mkdir()
            stands.append(BringUp(peer, mgr, tmp / peer))
            stands[-1].prepare()
        for i in range(runs):
            for stand in random.sample(stands, len(stands)):
                try:
                    stand.up()
                finally:
                    stand.down()
            figures = ", ".join(f"{s.peer} {s.seconds[-1]:.2f} s" for s in stands)
            print(f"bring-up round {i + 1}: {figures}", flush=True)
        usage = measure_idle(stands[-1], idle) if idle > 0 else (math.nan,) * 3
    return {s.peer: s for s in stands}, usage


def recovery_phase(tmp: Path, runs: int) -> dict[str, dict[str, list[float]]]:
    """{"hung": {peer: seconds...}, "crash": {...}}; inf where a peer never answered again."""
    figures: dict[str, dict[str, list[float]]] = {"hung": {}, "crash": {}}
    signals = {"hung": signal.SIGSTOP, "crash": signal.SIGKILL}
    with recovery_stands(tmp) as targets:
        for i in range(runs):
            for kind in random.sample(list(signals), 2):
                for target in random.sample(targets[kind], len(targets[kind])):
                    try:
                        seconds = break_and_time(target, signals[kind])
                    except TimeoutError as exc:
                        print(exc, flush=True)
                        seconds = math.inf
                    figures[kind].setdefault(target.peer, []).append(seconds)
            line = "; ".join(
                f"{kind} " + ", ".join(f"{p} {v[-1]:.2f} s" for p, v in peers.items())
                for kind, peers in figures.items()
            )
            print(f"recovery round {i + 1}: {line}", flush=True)
    return figures


def timing_medians(outputs: list[str]) -> list[str]:
    """The moments of several `apply --timings` outputs: median seconds since start, in that order."""
    at: dict[str, list[float]] = {}
    for out in outputs:
        for line in out.splitlines():
            parts = line.split(None, 3)  # "  1.234 s   +0.056  what"
            if len(parts) == 4 and parts[1] == "s" and parts[2].startswith("+"):
                with contextlib.suppress(ValueError):
                    at.setdefault(parts[3], []).append(float(parts[0]))
    rows, last = [], 0.0
    for what, values in sorted(at.items(), key=lambda kv: median(kv[1])):
        m = median(values)
        rows.append(f"{m:7.3f} s {f'+{m - last:.3f}':>8}  {what}")
        last = m
    return rows


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def report(
    by: dict[str, BringUp], recovery: dict[str, dict[str, list[float]]], usage: tuple[float, ...]
) -> str:
    base = median(by["loop"].seconds) if "loop" in by else math.nan
    lines = [f"{'bring-up to all healthy (5 services, test host A)':<58} {'seconds':>8} {'x loop':>7}"]
    labels = {
        "loop": "bare `podman pod create` + `podman run` loop",
        "gated": "the loop, waiting for each `depends_on: healthy` (not a peer)",
        "quadlet": "rendered quadlets + `systemctl --user start STACK.target`",
        "compose": "podman-compose up -d",
        "agent": "`sparc-agent apply`, health-gated",
    }
    for peer, stand in by.items():
        m = median(stand.seconds)
        lines.append(f"  {labels[peer]:<56} {m:>8.2f} {m / base:>7.2f}")
    for kind, title in (("hung", "hung (SIGSTOP)"), ("crash", "crash (kill -9)")):
        lines.append(f"{title + ' to answering again':<58} {'seconds':>8} {'runs':>7}")
        for peer, values in recovery[kind].items():
            lines.append(f"  {peer:<56} {median(values):>8.2f} {' '.join(f'{v:.1f}' for v in values):>7}")
    agent = by.get("agent")
    if agent:
        lines.append(
            f"where the fresh applies' time went (apply --timings, median of {len(agent.all_timings)}):"
        )
        lines += [f"  {line}" for line in timing_medians(agent.all_timings)]
        lines.append("and the last no-op's:")
        lines += [f"  {line}" for line in agent.noop_timings.splitlines()]
    noop = median(agent.noop_ms) if agent else math.nan
    if agent:
        lines.append(
            f"no-op re-apply: median {noop:.0f} ms over {len(agent.noop_ms)}, {agent.noop_restarts} restarts;"
            f" its exec probe alone (one `podman exec`): median {median(agent.exec_ms):.0f} ms"
        )
    rss, cpu, cpu_all = usage
    lines.append(
        f"agent idle, 5 services: peak RSS {rss:.1f} MB, CPU {cpu:.2f} % ({cpu_all:.2f} % with its children)"
    )

    def ratio(a: list[float], b: list[float]) -> float:
        return median(a) / median(b) if a and b else math.nan

    hung, crash = recovery["hung"], recovery["crash"]
    loop = by["loop"].seconds if "loop" in by else []
    lines.append(
        f"speed: bringup_ratio={ratio(agent.seconds if agent else [], loop):.2f}"
        f" quadlet_ratio={ratio(by['quadlet'].seconds if 'quadlet' in by else [], loop):.2f}"
        f" compose_ratio={ratio(by['compose'].seconds if 'compose' in by else [], loop):.2f}"
        f" hung_s={median(hung.get('agent', [])):.2f}"
        f" quadlet_hung_s={median(hung.get('quadlet kill', [])):.2f}"
        f" crash_ratio={ratio(crash.get('agent', []), crash.get('Restart=', [])):.2f}"
        f" noop_ms={noop:.0f} rss_mb={rss:.1f} cpu_pct={cpu:.2f}"
    )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="rounds (each peer once per round)")
    ap.add_argument("--quick", action="store_true", help="5 rounds, 15 s idle")
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of idle measurement (0: none)")
    ap.add_argument("--phases", default="bringup,recovery", help="which phases to run (default: both)")
    args = ap.parse_args()
    runs, idle = (5, 15.0) if args.quick else (args.runs, args.idle)
    phases = set(args.phases.split(","))
    if COMPOSE is None:
        print("podman-compose not found: pip install '.[test]'", file=sys.stderr)
        return 3
    problems = testhost.testhost_problems() + trixiehost.trixie_problems()
    if problems:
        print("test host not ready: " + "; ".join(problems), file=sys.stderr)
        return 3
    testhost.build_standin_images()
    t0 = time.monotonic()
    by: dict[str, BringUp] = {}
    usage: tuple[float, ...] = (math.nan,) * 3
    recovery: dict[str, dict[str, list[float]]] = {"hung": {}, "crash": {}}
    with testhost.journald_running(), tempfile.TemporaryDirectory(prefix="sparc-speed-") as tmpdir:
        if "bringup" in phases:
            by, usage = bringup_phase(Path(tmpdir), runs, idle)
        if "recovery" in phases:
            recovery = recovery_phase(Path(tmpdir), runs)
    print(f"\n{runs} rounds in {time.monotonic() - t0:.0f} s")
    print(report(by, recovery, usage))
    return 0


if __name__ == "__main__":
    sys.exit(main())
