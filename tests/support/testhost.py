"""pytest plugin: the real test host (systemd user managers, quadlet, podman, journald).

Loaded from tests/conftest.py with ``pytest_plugins = ["testhost"]``. The recipe and its reasons are in
/work/shared/test-host.md; ``scripts/test-host-setup.sh`` installs the host.

Fixtures
    journald          (session) makes sure journald listens on /run/systemd/journal/socket
    user_manager      (function) a private ``systemd --user`` manager -> :class:`UserManager`
    standin_images    (session) builds the stand-in SPARC images -> dict short name -> image ref

Helpers
    require_testhost(), testhost_problems(), free_port(), quadlet_dryrun(), systemd_analyze_verify(),
    wait_for(), wait_tcp(), http_get(), ws_handshake(), grpc_health(), stun_binding(), podman(),
    restart_manager()

e2e tests (marker ``e2e``, or any test using ``user_manager``/``standin_images``) are skipped with the
reason when the host lacks podman/quadlet/systemd, and fail instead when ``CI=true`` or
``SPARC_REQUIRE_TESTHOST=1``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[2]
QUADLET = Path("/usr/libexec/podman/quadlet")
SYSTEMD = Path("/lib/systemd/systemd")
JOURNALD = Path("/lib/systemd/systemd-journald")
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Shared by all pytest sessions on the machine (other engineers run tests concurrently).
SHARED_STATE = Path("/run/sparc-testhost")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BB_IMAGE = "localhost/sparc-test/bb:test"
STANDIN_SCRIPT = REPO / "scripts" / "build-standin-images.sh"
STANDIN_IMAGES = {
    "bb": BB_IMAGE,
    "py": "localhost/sparc-test/py:base",
    "riva": "nvcr.io/nvidia/riva/riva-speech:2.16.0-server",
    "mas": "localhost/sparc/mas-server:latest",
    "signaling": "localhost/sparc/signaling-server:latest",
    "coturn": "docker.io/coturn/coturn:4.6",
    "unity": "localhost/sparc/unity-server:latest",
    "ws-bridge": "localhost/sparc/riva-websocket-bridge:latest",
    "renderer": "localhost/sparc-test/urs-renderer:test",
    "turn": "localhost/sparc-test/coturn:test",
}

# quadlet 5 runs "podman volume|network create --ignore NAME"; podman < 4.4 has no --ignore.
PODMAN_COMPAT = r"""#!/bin/bash
# written by tests/support/testhost.py: podman < 4.4 lacks "volume|network create --ignore"
if [[ ($1 == volume || $1 == network) && $2 == create ]]; then
  args=(); ign=0
  for a in "$@"; do if [[ $a == --ignore ]]; then ign=1; else args+=("$a"); fi; done
  if (( ign )) && /usr/bin/podman "$1" exists "${args[-1]}"; then exit 0; fi
  exec /usr/bin/podman "${args[@]}"
fi
exec /usr/bin/podman "$@"
"""

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# host checks: skip on a laptop, fail in CI


def _require_strict() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("SPARC_REQUIRE_TESTHOST") == "1"


def unavailable(msg: str) -> NoReturn:
    """The one skip rule of every test that needs a part of the test host: a failure under CI or
    SPARC_REQUIRE_TESTHOST=1 (CI installs everything, so a missing part is a broken CI), else a skip
    that says what is missing."""
    if _require_strict():
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def require_tool(name: str, hint: str = "scripts/test-host-setup.sh installs it") -> str:
    """The path of a program the test needs, or `unavailable`."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} not installed ({hint})")
    return path


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.strip().split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


_podman_version: tuple[int, ...] | None = None


def podman_version() -> tuple[int, ...]:
    """(major, minor, patch) of the podman client, cached."""
    global _podman_version
    if _podman_version is None:
        out = subprocess.run(["podman", "--version"], capture_output=True, text=True, check=True).stdout
        _podman_version = _version_tuple(out.split()[-1])
    return _podman_version


def _memory_parent() -> Path | None:
    """Our own cgroup in the v1 memory hierarchy (hybrid hosts), where managers get a child of their own.

    Without it a manager shares its launcher's memory cgroup, and every quadlet container started with
    --cgroups=split moves all processes of that cgroup, the test runner included, one `runtime/` level
    deeper: a few hundred container starts later, cgroup paths pass PATH_MAX ("file name too long").
    """
    if not (CGROUP_ROOT / "memory" / "cgroup.procs").exists():
        return None
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                return CGROUP_ROOT / "memory" / path.lstrip("/")
    return None


def _cgroup_hierarchies() -> list[Path]:
    """Where a manager's cgroup subtree must be created: hybrid (systemd + unified) or pure v2."""
    hybrid = [CGROUP_ROOT / "systemd", CGROUP_ROOT / "unified"]
    if all((h / "cgroup.procs").exists() for h in hybrid):
        return hybrid
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT]
    return [h for h in hybrid if (h / "cgroup.procs").exists()]


def testhost_problems() -> list[str]:
    """What this machine lacks for e2e tests (empty when it is a usable test host)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (the e2e fixtures run rootful podman and write cgroups)")
    if shutil.which("podman") is None:
        problems.append("podman not installed")
    if not QUADLET.is_file():
        problems.append(f"quadlet generator missing at {QUADLET}")
    if not SYSTEMD.is_file():
        problems.append(f"{SYSTEMD} missing")
    if shutil.which("systemctl") is None:
        problems.append("systemctl missing")
    if not _cgroup_hierarchies():
        problems.append("no usable cgroup hierarchy under /sys/fs/cgroup")
    return problems


def require_testhost() -> None:
    """Skip (or fail under CI / SPARC_REQUIRE_TESTHOST=1) when the host cannot run e2e tests."""
    problems = testhost_problems()
    if not problems:
        return
    unavailable("test host not available: " + "; ".join(problems) + " (run scripts/test-host-setup.sh)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("e2e") is not None:
        require_testhost()


# --------------------------------------------------------------------------------------------------
# small helpers


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """subprocess.run with text output captured; `check` raises with stderr in the message."""
    proc = subprocess.run(
        list(argv), env=env, capture_output=True, text=True, timeout=timeout, input=input, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run(["podman", *args], check=check, timeout=timeout)


def wait_for(fn: Callable[[], T], timeout: float = 30, interval: float = 0.05, what: str = "") -> T:
    """Call fn until it returns a truthy value (exceptions count as falsy); TimeoutError after timeout."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = fn()
            if value:
                return value
        except Exception as exc:  # the condition may legitimately raise until it holds
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout}s waiting for {what or fn!r} (last error: {last!r})"
            )
        time.sleep(interval)


_given_ports: set[int] = set()


def free_port(proto: str = "tcp", host: str = "127.0.0.1") -> int:
    """A port that is free now for `proto` ("tcp", "udp" or "both"), never handed out twice per session.

    Chosen at random below the ephemeral range (32768+), so it does not collide with outgoing connections
    nor, most likely, with another pytest session choosing at the same time. Checked by binding the
    wildcard address, which fails if anything listens on 127.0.0.1 or 0.0.0.0.
    """
    kinds = {
        "tcp": [socket.SOCK_STREAM],
        "udp": [socket.SOCK_DGRAM],
        "both": [socket.SOCK_STREAM, socket.SOCK_DGRAM],
    }
    if proto not in kinds:
        raise ValueError(f"proto must be tcp, udp or both, not {proto!r}")
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        if port in _given_ports:
            continue
        try:
            for kind in kinds[proto]:
                for addr in ("0.0.0.0", host):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind((addr, port))
        except OSError:
            continue
        _given_ports.add(port)
        return port
    raise RuntimeError("no free port found")


# --------------------------------------------------------------------------------------------------
# reference probes (independent of sparc_agent.probes, so e2e tests can cross-check them)


def wait_tcp(port: int, timeout: float = 30, host: str = "127.0.0.1") -> float:
    """Wait until host:port accepts TCP; return the seconds it took."""
    t0 = time.monotonic()

    def connect() -> bool:
        with socket.create_connection((host, port), timeout=1):
            return True

    wait_for(connect, timeout, what=f"tcp {host}:{port}")
    return time.monotonic() - t0


def http_get(
    port: int, path: str = "/", host: str = "127.0.0.1", timeout: float = 3
) -> tuple[str, int, bytes]:
    """One HTTP/1.1 GET; returns (http version, status, body)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    version, status = head.split(b" ", 2)[:2]
    return version.decode(), int(status), body


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_handshake(port: int, path: str = "/", host: str = "127.0.0.1", timeout: float = 3) -> tuple[int, bool]:
    """RFC 6455 opening handshake; returns (status, Sec-WebSocket-Accept is correct)."""
    key = base64.b64encode(os.urandom(16)).decode()
    want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    lines = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines and " " in lines[0] else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers.get("sec-websocket-accept") == want


def grpc_health(port: int, service: str = "", host: str = "127.0.0.1", timeout: float = 3) -> int:
    """grpc.health.v1.Health/Check over h2 (no grpcio needed); returns the status enum (1 = SERVING)."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    name = service.encode()
    request = b"\x0a" + bytes([len(name)]) + name if name else b""  # HealthCheckRequest{service}
    with socket.create_connection((host, port), timeout=timeout) as s:
        conn.send_headers(
            1,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/grpc.health.v1.Health/Check"),
                (":authority", f"{host}:{port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ],
        )
        conn.send_data(1, b"\x00" + struct.pack("!I", len(request)) + request, end_stream=True)
        s.sendall(conn.data_to_send())
        body, grpc_status, done = b"", None, False
        while not done:
            chunk = s.recv(65536)
            if not chunk:
                break
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    grpc_status = dict(event.headers).get(b"grpc-status")
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    done = True
            s.sendall(conn.data_to_send())
    if grpc_status not in (None, b"0"):
        raise RuntimeError(f"grpc-status {grpc_status!r}")
    message = body[5:]  # 1 byte compressed flag + 4 bytes length
    # HealthCheckResponse{status = 1}: field 1 varint; an empty message means UNKNOWN (0)
    return message[1] if len(message) >= 2 and message[0] == 0x08 else 0


def stun_binding(port: int, host: str = "127.0.0.1", timeout: float = 2) -> tuple[str, int]:
    """RFC 5389 Binding Request over UDP; returns the XOR-MAPPED-ADDRESS (ip, port) of a success reply."""
    magic = 0x2112A442
    txid = os.urandom(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(struct.pack("!HHI", 0x0001, 0, magic) + txid, (host, port))
        data, _ = s.recvfrom(2048)
    kind, length, cookie = struct.unpack("!HHI", data[:8])
    if kind != 0x0101 or cookie != magic or data[8:20] != txid:
        raise RuntimeError(f"not a Binding Success for our transaction: {data[:20].hex()}")
    pos = 20
    while pos + 4 <= 20 + length:
        atype, alen = struct.unpack("!HH", data[pos : pos + 4])
        value = data[pos + 4 : pos + 4 + alen]
        if atype == 0x0020 and value[1] == 1:
            xport = struct.unpack("!H", value[2:4])[0] ^ (magic >> 16)
            xip = struct.unpack("!I", value[4:8])[0] ^ magic
            return socket.inet_ntoa(struct.pack("!I", xip)), xport
        pos += 4 + alen + (-alen % 4)
    raise RuntimeError("Binding Success without XOR-MAPPED-ADDRESS")


# --------------------------------------------------------------------------------------------------
# journald (session)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    SHARED_STATE.mkdir(parents=True, exist_ok=True)
    with open(SHARED_STATE / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _journal_alive() -> bool:
    # the socket file outlives a killed journald: connect to tell a live one from a stale path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(str(JOURNAL_SOCKET))
        except OSError:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_pid(pid: int, timeout: float = 60) -> bool:
    """SIGTERM, wait up to timeout, then SIGKILL. Returns True if SIGKILL was needed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # reap it if it is our child, else poll
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return False
        if not _pid_alive(pid):
            return False
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return True


@pytest.fixture(scope="session")
def journald() -> Iterator[Path]:
    """Make sure journald answers on /run/systemd/journal/socket; yields the socket path."""
    require_testhost()
    with journald_running() as socket:
        yield socket


@contextlib.contextmanager
def journald_running() -> Iterator[Path]:
    """journald for the duration (benchmarks use this too).

    Concurrent pytest sessions share one journald: each registers its PID under /run/sparc-testhost; a
    journald started by this plugin is stopped by the last session that leaves. A journald that was already
    running (not ours) is never touched.
    """
    users = SHARED_STATE / "journald.users"
    pidfile = SHARED_STATE / "journald.pid"
    me = users / str(os.getpid())
    with _locked("journald"):
        users.mkdir(parents=True, exist_ok=True)
        me.touch()
        if not _journal_alive():
            Path("/run/systemd/system").mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                JOURNAL_SOCKET.unlink()  # stale
            proc = subprocess.Popen(
                [str(JOURNALD)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            pidfile.write_text(str(proc.pid))
            wait_for(_journal_alive, 10, what="journald socket")
            # else logger/syslog(3): "socket /dev/log: No such file"
            if not os.path.lexists("/dev/log"):
                os.symlink("/run/systemd/journal/dev-log", "/dev/log")
                (SHARED_STATE / "devlog.ours").touch()
    try:
        yield JOURNAL_SOCKET
    finally:
        with _locked("journald"):
            me.unlink(missing_ok=True)
            others = [p for p in users.iterdir() if p.name.isdigit() and _pid_alive(int(p.name))]
            for stale in set(users.iterdir()) - set(others):
                stale.unlink(missing_ok=True)
            if not others and pidfile.exists():
                pid = int(pidfile.read_text())
                # only the journald this plugin started (check it still is journald, not a reused PID)
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{pid}/exe").resolve() == JOURNALD.resolve():
                        _stop_pid(pid, 10)
                pidfile.unlink(missing_ok=True)
                if (SHARED_STATE / "devlog.ours").exists():
                    with contextlib.suppress(FileNotFoundError):
                        if os.readlink("/dev/log") == "/run/systemd/journal/dev-log":
                            os.unlink("/dev/log")
                    (SHARED_STATE / "devlog.ours").unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# user managers


@pytest.fixture(scope="session")
def testhost_dir() -> Iterator[Path]:
    """Session scratch dir with short paths (unix socket paths must stay < 108 bytes) + the podman shim."""
    require_testhost()
    d = Path(tempfile.mkdtemp(prefix="sparc-th-", dir="/tmp"))
    shim = d / "podman-compat"
    shim.write_text(PODMAN_COMPAT)
    shim.chmod(0o755)
    try:
        yield d
    finally:
        if os.environ.get("SPARC_KEEP_TESTHOST") != "1":
            shutil.rmtree(d, ignore_errors=True)


@dataclass
class UserManager:
    """A private `systemd --user` manager, started by the `user_manager` fixture."""

    name: str  # unique prefix for container/pod/volume/network names: "th-xxxxxx"
    root: Path
    env: dict[str, str]  # XDG_*, DBUS_SESSION_BUS_ADDRESS (+ CONTAINERS_CONF when the caller uses one)
    pid: int = 0
    start_seconds: float = 0.0  # launch -> is-system-running says running/degraded
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def slice(self) -> str:
        return f"{self.name}.slice"

    @property
    def run_dir(self) -> Path:  # XDG_RUNTIME_DIR: bus, systemd/generator, %t/*.cid
        return self.root / "run"

    @property
    def config_dir(self) -> Path:  # XDG_CONFIG_HOME
        return self.root / "cfg"

    @property
    def state_dir(self) -> Path:  # XDG_STATE_HOME
        return self.root / "state"

    @property
    def unit_dir(self) -> Path:  # plain user units
        return self.config_dir / "systemd" / "user"

    @property
    def quadlet_dir(self) -> Path:  # .container/.pod/.volume/.network files
        return self.config_dir / "containers" / "systemd"

    @property
    def generator_dir(self) -> Path:  # where quadlet writes the generated .service files
        return self.run_dir / "systemd" / "generator"

    @property
    def log_path(self) -> Path:
        return self.root / "manager.log"

    def cgroup_dirs(self) -> list[Path]:
        memory = _memory_parent()
        extra = [memory / self.slice / "user@0.service"] if memory is not None else []
        return [h / self.slice / "user@0.service" for h in _cgroup_hierarchies()] + extra

    def environ(self, **extra: str) -> dict[str, str]:
        """os.environ + this manager's variables: for systemctl/busctl/podman/sparc-agent subprocesses."""
        return {**os.environ, **self.env, **extra}

    def systemctl(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run(
            ["systemctl", "--user", "--no-pager", *args], env=self.environ(), check=check, timeout=timeout
        )

    def busctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(["busctl", "--user", *args], env=self.environ(), check=check, timeout=timeout)

    def daemon_reload(self) -> None:
        self.systemctl("daemon-reload")

    def journal(self, unit: str | None = None, *extra: str) -> str:
        """Journal lines (message text only) logged by this manager's units, or by one unit."""
        argv = ["journalctl", "--no-pager", "-o", "cat", f"_SYSTEMD_SLICE={self.slice}"]
        if unit:
            argv.append(f"_SYSTEMD_USER_UNIT={unit}")
        return run([*argv, *extra], check=False).stdout

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def state(self) -> str:
        return self.systemctl("is-system-running", check=False, timeout=10).stdout.strip()

    def prefixed(self, suffix: str) -> str:
        """A podman object name owned by this manager (removed at teardown)."""
        return f"{self.name}-{suffix}"

    def owns(self, podman_name: str) -> bool:
        # quadlet's default names are systemd-<unit>: count those of our prefix too
        return any(
            podman_name == p or podman_name.startswith(p + "-") for p in (self.name, f"systemd-{self.name}")
        )


def _new_manager(root: Path, name: str) -> UserManager:
    """The manager's dirs and cgroup subtree; no process yet."""
    env = {
        "XDG_RUNTIME_DIR": str(root / "run"),
        "XDG_CONFIG_HOME": str(root / "cfg"),
        "XDG_STATE_HOME": str(root / "state"),
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path={root / 'run' / 'bus'}",
    }
    if "CONTAINERS_CONF" in os.environ:  # a private containers.conf replaces /etc's: pass it on
        env["CONTAINERS_CONF"] = os.environ["CONTAINERS_CONF"]
    mgr = UserManager(name=name, root=root, env=env)
    for d in (mgr.run_dir, mgr.state_dir, mgr.unit_dir, mgr.quadlet_dir):
        d.mkdir(parents=True, exist_ok=True)
    mgr.run_dir.chmod(0o700)
    for cg in mgr.cgroup_dirs():
        cg.mkdir(parents=True, exist_ok=True)
    return mgr


def _launch_manager(mgr: UserManager, shim: Path | None, timeout: float = 30) -> None:
    """Start `systemd --user` inside the subtree and wait for running/degraded."""
    # A clean environment: the manager hands its environment to every unit it starts.
    menv = {
        "PATH": PATH,
        "HOME": os.environ.get("HOME", "/root"),
        "USER": "root",
        "LOGNAME": "root",
        "LANG": "C.UTF-8",
        **mgr.env,
    }
    if shim is not None:
        menv["PODMAN"] = str(shim)  # quadlet writes this path into every Exec= line
    spawn_manager(mgr, lambda argv: argv, menv, SYSTEMD, timeout, f"user manager {mgr.name}")


def spawn_manager(
    mgr: UserManager,
    wrap: Callable[[list[str]], list[str]],
    env: dict[str, str],
    systemd: Path | str,
    timeout: float,
    what: str,
) -> None:
    """Start `systemd --user` inside mgr's cgroup subtree (argv through `wrap`, e.g. a chroot) and wait
    until it says running/degraded."""
    procs = " ".join(str(cg / "cgroup.procs") for cg in mgr.cgroup_dirs())
    # the shell moves itself into the subtree, then becomes systemd (same PID)
    script = f'for f in {procs}; do echo $$ > "$f"; done; exec {systemd} --user'
    t0 = time.monotonic()
    with open(mgr.log_path, "wb") as log:
        mgr._proc = subprocess.Popen(
            wrap(["/bin/sh", "-c", script]),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    mgr.pid = mgr._proc.pid

    def ready() -> bool:
        if not mgr.is_running():
            raise RuntimeError(f"systemd --user exited {mgr._proc.returncode if mgr._proc else '?'}")
        return mgr.state() in ("running", "degraded")

    try:
        wait_for(ready, timeout, what=what)
    except (RuntimeError, TimeoutError) as exc:
        log_text = mgr.log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"user manager {mgr.name} did not start: {exc}\n{log_text}") from exc
    mgr.start_seconds = time.monotonic() - t0


@contextlib.contextmanager
def standalone_manager() -> Iterator[UserManager]:
    """A manager outside pytest (benchmarks): its own dirs under /tmp, stopped and removed at the end."""
    root = Path(tempfile.mkdtemp(prefix="sparc-bench-", dir="/tmp"))
    mgr = _new_manager(root / "m", f"bench-{os.urandom(3).hex()}")
    try:
        _launch_manager(mgr, None)
        yield mgr
    finally:
        stop_manager(mgr)
        shutil.rmtree(root, ignore_errors=True)


def restart_manager(mgr: UserManager, timeout: float = 30) -> float:
    """Restart the whole user manager of the `user_manager` fixture, like `systemctl --user exit` + login.

    SIGTERM makes `systemd --user` start exit.target: its units (and their containers) stop, then it
    exits. A new `systemd --user` starts on the same XDG dirs and cgroup subtree, with the same podman
    shim as the first; `mgr.pid`/`mgr._proc` then name it, so the fixture's teardown stops the new one.
    The old manager's log is kept as manager.log.1. Returns the seconds the old manager took to exit."""
    t0 = time.monotonic()
    if mgr.pid and _stop_pid(mgr.pid, 60):
        raise RuntimeError(f"manager {mgr.name} (pid {mgr.pid}) needed SIGKILL to stop")
    stopped = time.monotonic() - t0
    with contextlib.suppress(OSError):
        mgr.log_path.replace(mgr.log_path.with_name(mgr.log_path.name + ".1"))
    shim = mgr.root.parent / "podman-compat" if podman_version() < (4, 4) else None  # as user_manager
    _launch_manager(mgr, shim, timeout)
    return stopped


def _cleanup_podman(
    mgr: UserManager, call: Callable[..., subprocess.CompletedProcess[str]] | None = None
) -> list[str]:
    """Remove containers, pods, volumes, networks and secrets named with the manager's prefix
    (`call` runs podman: the host's by default, or e.g. the trixie root's)."""
    call = call or podman
    removed: list[str] = []
    listings = [
        (["ps", "-a", "--format", "{{.Names}}"], ["rm", "-f", "-t", "0"]),
        (["pod", "ps", "--format", "{{.Name}}"], ["pod", "rm", "-f", "-t", "0"]),
        (["volume", "ls", "--format", "{{.Name}}"], ["volume", "rm", "-f"]),
        (["network", "ls", "--format", "{{.Name}}"], ["network", "rm", "-f"]),
        (["secret", "ls", "--format", "{{.Name}}"], ["secret", "rm"]),
    ]
    for listing, remove in listings:
        names = [n for n in call(*listing, check=False).stdout.split() if mgr.owns(n)]
        if names:
            call(*remove, *names, check=False)
            removed += names
    return removed


def _remove_cgroups(mgr: UserManager) -> list[int]:
    """rmdir the manager's cgroup subtree in every hierarchy (v1 controllers too: --cgroups=split).

    Processes still inside it belong to this test by construction; they are killed first."""
    tops = [h / mgr.slice for h in CGROUP_ROOT.iterdir() if (h / mgr.slice).is_dir()]
    if (CGROUP_ROOT / mgr.slice).is_dir():
        tops.append(CGROUP_ROOT / mgr.slice)
    memory = _memory_parent()
    if memory is not None and (memory / mgr.slice).is_dir() and memory / mgr.slice not in tops:
        tops.append(memory / mgr.slice)
    return remove_cgroup_trees(tops)


def remove_cgroup_trees(tops: Sequence[Path]) -> list[int]:
    """Kill what is still inside these cgroup subtrees (ours by construction), then rmdir them."""
    killed: list[int] = []
    for top in tops:
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                for pid in map(int, procs.read_text().split()):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
    for top in tops:
        if not top.is_dir():
            continue
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for d in [*dirs, top]:
            # EBUSY while the kernel still tears down the killed processes: retry briefly
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
    return killed


def stop_manager(mgr: UserManager) -> list[str]:
    """Stop a manager and everything it owns; returns a list of problems (empty when clean)."""
    problems: list[str] = []
    if mgr.pid and _stop_pid(mgr.pid, 60):
        problems.append(f"manager {mgr.name} (pid {mgr.pid}) needed SIGKILL")
    leftovers = _cleanup_podman(mgr)
    if leftovers:
        # not an error: tests may leave units running; the manager stops them, `podman rm` catches the rest
        print(f"testhost: removed podman objects of {mgr.name}: {leftovers}")
    killed = _remove_cgroups(mgr)
    if killed:
        problems.append(f"killed processes left in {mgr.slice}: {killed}")
    return problems


@pytest.fixture
def user_manager(journald: Path, testhost_dir: Path) -> Iterator[UserManager]:
    """A fresh `systemd --user` manager in its own cgroup subtree and XDG dirs, stopped at teardown."""
    name = f"th-{os.urandom(3).hex()}"
    shim = testhost_dir / "podman-compat" if podman_version() < (4, 4) else None
    mgr = _new_manager(testhost_dir / name, name)
    try:
        _launch_manager(mgr, shim)
        yield mgr
    finally:
        # shown by pytest only when the test failed
        print(f"--- journal of {mgr.slice} ---\n{mgr.journal()[-6000:]}")
        with contextlib.suppress(OSError):
            print(f"--- {mgr.log_path} ---\n{mgr.log_path.read_text(errors='replace')[-3000:]}")
        problems = stop_manager(mgr)
        if os.environ.get("SPARC_KEEP_TESTHOST") != "1":
            shutil.rmtree(mgr.root, ignore_errors=True)
        if problems:
            pytest.fail("user_manager teardown: " + "; ".join(problems), pytrace=False)


# --------------------------------------------------------------------------------------------------
# quadlet and systemd-analyze


def quadlet_dryrun(unit_dir: Path | str, *, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the real generator on the files in unit_dir only; (rc, stdout = generated units, stderr).

    A bad file gives rc 1 and a message naming it; the good files are still printed."""
    full = {**os.environ, **(env or {}), "QUADLET_UNIT_DIRS": str(unit_dir)}
    proc = run([str(QUADLET), "-dryrun", "-user"], env=full, check=False, timeout=30)
    return proc.returncode, proc.stdout, proc.stderr


def systemd_analyze_verify(unit_paths: Sequence[Path | str], env: dict[str, str]) -> tuple[int, str]:
    """`systemd-analyze --user verify` of unit files; (rc, combined output). Clean = rc 0 and no output.

    Works without a booted system when given a user manager's `.environ()`: --user needs XDG_RUNTIME_DIR
    ("Failed to initialize manager: No such device or address" without it), and with the manager's
    XDG_CONFIG_HOME/XDG_RUNTIME_DIR it also resolves units in its unit dir and generator dir (a
    `Wants=web.service` of a plain unit finds the generated web.service; a missing `Requires=` target
    gives rc 1, "Unit other.service not found"). Generated units verify (rc 0) as they are: their Exec
    binaries (podman or the compat shim) exist. Unknown keys and unparsable values are only warnings
    ("Unknown key 'X' in section [Service], ignoring.") with rc 0, so assert on the output too.
    Warnings about units bookworm lacks (podman-user-wait-network-online.service) are dropped.
    """
    argv = ["systemd-analyze", "--user", "--no-pager", "verify", *map(str, unit_paths)]
    proc = run(argv, env={**os.environ, **env}, check=False, timeout=60)
    lines = [
        ln for ln in (proc.stdout + proc.stderr).splitlines() if "podman-user-wait-network-online" not in ln
    ]
    return proc.returncode, "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# stand-in images


def build_standin_images(force: bool = False) -> dict[str, str]:
    """Build (or reuse, by source hash) the stand-in images via scripts/build-standin-images.sh."""
    argv = [str(STANDIN_SCRIPT), *(["--force"] if force else [])]
    proc = run(argv, check=False, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"building stand-in images failed:\n{proc.stdout}\n{proc.stderr}")
    return dict(STANDIN_IMAGES)


@pytest.fixture(scope="session")
def standin_images() -> dict[str, str]:
    """Short name -> image reference of the stand-ins (bb, py, riva, mas, signaling, coturn, unity)."""
    require_testhost()
    return build_standin_images()


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0
