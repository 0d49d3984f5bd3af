"""Two network namespaces joined by a veth pair: the server side (real coturn, the URS signaling
stand-in, the aiortc renderer stand-in) in one, the probe in the other, so the relay path is really
crossed (coturn refuses loopback peers). Created and removed by the test, also on failure;
packet drops with nftables inside the server namespace only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "images" / "standin"
RELAY_MIN, RELAY_MAX = 49152, 49200
TURN_PORT, SIGNALING_PORT = 3478, 8080  # inside our own namespace: no clash with other tests


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def available() -> str | None:
    """Why the media e2e cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "nft", "turnserver"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (scripts/test-host-setup.sh installs it)"
    try:
        import aiortc  # noqa: F401
    except ImportError:
        return "aiortc not installed (pip install -e '.[test]')"
    return None


@dataclass
class MediaNet:
    server_ns: str
    client_ns: str
    server_ip: str
    client_ip: str
    tmp: Path
    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    containers: list[str] = field(default_factory=list)

    def exec_argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        log = (self.tmp / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            self.exec_argv(self.server_ns, argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": f"{ROOT}:{STANDIN}", **(env or {})},
            start_new_session=True,
        )

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_port(self, port: int, udp: bool = False, timeout: float = 10.0) -> None:
        flag = "-lun" if udp else "-ltn"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                self.exec_argv(self.server_ns, ["ss", flag]), capture_output=True, text=True, timeout=5
            ).stdout
            if f":{port} " in out:
                return
            time.sleep(0.05)
        raise TimeoutError(f"nothing listens on {port} in {self.server_ns}: {self.log('turn')[-500:]}")

    def turn(self, denied_private: bool = True) -> None:
        """Real coturn with use-auth-secret, configured as the example is (secret in a 0600 file)."""
        conf = self.tmp / "turnserver.conf"
        lines = [
            f"listening-ip={self.server_ip}",
            f"relay-ip={self.server_ip}",
            f"listening-port={TURN_PORT}",
            f"min-port={RELAY_MIN}",
            f"max-port={RELAY_MAX}",
            "realm=sparc",
            "use-auth-secret",
            f"static-auth-secret={self.secret}",
            "no-tcp-relay",
            "no-multicast-peers",
            "no-cli",
            "no-tls",
            "no-dtls",
            "fingerprint",
            f"pidfile={self.tmp / 'turn.pid'}",
            "log-file=stdout",
            "simple-log",
        ]
        if denied_private:  # the example's peer restrictions, with a hole for the renderer's own address
            lines += [
                "denied-peer-ip=10.0.0.0-10.255.255.255",
                "denied-peer-ip=172.16.0.0-172.31.255.255",
                "denied-peer-ip=192.168.0.0-192.168.255.255",
                "denied-peer-ip=169.254.0.0-169.254.255.255",
                f"allowed-peer-ip={self.server_ip}",
            ]
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o600)
        self.start("turn", ["turnserver", "-c", str(conf)])
        self.wait_port(TURN_PORT, udp=True)

    def signaling(self, mode: str = "websocket") -> None:
        argv = [
            sys.executable,
            str(STANDIN / "signaling_server.py"),
            "build/index.js",
            "-p",
            str(SIGNALING_PORT),
        ]
        self.start("signaling", [*argv, *(["-t", "http"] if mode == "http" else [])])
        self.wait_port(SIGNALING_PORT)

    def renderer(self, mode: str = "answer", signaling: str = "websocket") -> None:
        scheme = "http" if signaling == "http" else "ws"
        url = f"{scheme}://{self.server_ip}:{SIGNALING_PORT}"
        self.start(
            "renderer",
            [sys.executable, str(STANDIN / "urs_renderer.py"), "-signalingUrl", url, "--mode", mode],
        )
        deadline = time.monotonic() + 15
        while "registered" not in self.log("renderer"):
            if time.monotonic() > deadline or self.procs["renderer"].poll() is not None:
                raise TimeoutError(f"renderer did not register: {self.log('renderer')[-800:]}")
            time.sleep(0.05)

    def renderer_container(self, image: str, mode: str = "answer") -> None:
        """The stand-in renderer image (Debian's aiortc), run by podman inside the server namespace."""
        name = f"{self.server_ns}-renderer"
        self.containers.append(name)
        url = f"ws://{self.server_ip}:{SIGNALING_PORT}"
        subprocess.run(
            ["podman", "run", "-d", "--rm", "--name", name, "--network", f"ns:/run/netns/{self.server_ns}",
             image, "/opt/sparc/SPARC-P.x86_64", "-signalingUrl", url, "--mode", mode],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True, timeout=30)
            if "registered" in logs.stdout + logs.stderr:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"renderer container did not register: {logs.stdout[-800:]}{logs.stderr[-800:]}"
                )
            time.sleep(0.2)

    def drop_relay_ports(self) -> None:
        """Drop what reaches TURN's relay ports (the peer's side of the relay), in our namespace only."""
        rules = (
            "table inet sparcmedia {\n  chain input {\n"
            "    type filter hook input priority 0; policy accept;\n"
            f"    udp dport {RELAY_MIN}-{RELAY_MAX} drop\n  }}\n}}\n"
        )
        subprocess.run(
            self.exec_argv(self.server_ns, ["nft", "-f", "-"]), input=rules.encode(), check=True, timeout=10
        )

    def allow_relay_ports(self) -> None:
        subprocess.run(
            self.exec_argv(self.server_ns, ["nft", "delete", "table", "inet", "sparcmedia"]),
            check=False,
            capture_output=True,  # no table: nothing to allow
            timeout=10,
        )

    def client_run(self, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.exec_argv(self.client_ns, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def close(self) -> None:
        for name in self.containers:
            subprocess.run(
                ["podman", "rm", "-f", "-t", "0", name], capture_output=True, timeout=60, check=False
            )
        for name in list(self.procs):
            self.stop(name)


@contextlib.contextmanager
def media_net(tmp: Path) -> Iterator[MediaNet]:
    tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
    octet = 1 + int(secrets.token_hex(1), 16) % 250
    server_ns, client_ns = f"sparc-media-s{tag}", f"sparc-media-c{tag}"
    veth_s, veth_c = f"smv{tag}"[:15], f"smc{tag}"[:15]
    net = MediaNet(server_ns, client_ns, f"10.231.{octet}.1", f"10.231.{octet}.2", tmp)
    made: list[str] = []
    try:
        for ns in (server_ns, client_ns):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip(
            "link",
            "add",
            veth_s,
            "netns",
            server_ns,
            "type",
            "veth",
            "peer",
            "name",
            veth_c,
            "netns",
            client_ns,
        )
        _ip("-n", server_ns, "addr", "add", f"{net.server_ip}/24", "dev", veth_s)
        _ip("-n", client_ns, "addr", "add", f"{net.client_ip}/24", "dev", veth_c)
        _ip("-n", server_ns, "link", "set", veth_s, "up")
        _ip("-n", client_ns, "link", "set", veth_c, "up")
        yield net
    finally:
        net.close()
        for ns in made:  # deleting a namespace deletes its end of the veth pair, and so the pair
            subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True, timeout=10)
