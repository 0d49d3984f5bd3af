"""pytest plugin: the "Option B" test host, podman 5.4 + systemd 257 in a Debian trixie root.

Loaded from tests/conftest.py (``pytest_plugins``). The recipe is /work/shared/test-host.md, section
"Option B"; ``scripts/trixie-root-setup.sh`` builds and mounts the root. Bookworm's podman is 4.3.1, the
target machines (RHEL 9) run podman 5.x: running the same e2e tests in this root proves the podman >= 5
rendering path (``.pod`` + ``StartWithPod=false``, ``.volume``, no id-file shims, systemd >= 254 keys).

Everything inside runs in the root's own mount namespace (``nsenter --mount=NAMESPACE``), where the root
is ``/`` by pivot_root, not by chroot: under a chroot, `podman exec` (the exec probe, podman's health
checks) entered a container's namespaces but the host's root directory (see _make_namespace).

Fixtures
    trixie_root     (session) the root, built if needed and mounted; shared with concurrent sessions
                    (refcounted under /run/sparc-testhost), unmounted by the last session that leaves
    trixie_agent    (session) sparc-agent + deps installed into a venv inside the root (python 3.13)
    trixie_images   (session) the stand-in images, copied from the host store into the root's (by id)
    trixie_manager  (function) a private ``systemd --user`` inside the root -> :class:`TrixieManager`
    apply_host      (function, params bookworm/trixie) a manager + images + a scratch dir for e2e tests

Paths are the same on both sides: a manager's directory is /tmp/NAME inside the root, and /tmp/NAME on
the host is a symlink to it, so tests read and write its files with the paths sparc-agent sees.

Inside the root, logs go to the host's journald: the root's /run/systemd/journal is a bind mount of the
host's (without a socket there, containers with ``LogDriver=journald`` still run but their output is
silently lost: `podman logs` is empty), and /run/log/journal is bound read-only so that journalctl inside
(apply's "last log lines") reads them. Both binds live under the root's /run tmpfs: `umount` takes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.testhost import (
    REPO,
    SHARED_STATE,
    UserManager,
    _cleanup_podman,
    _locked,
    _pid_alive,
    _remove_cgroups,
    podman,
    require_testhost,
    run,
    spawn_manager,
    unavailable,
)

ROOT = Path(os.environ.get("TRIXIE_ROOT", "/opt/sparc-trixie-root"))
SETUP = REPO / "scripts" / "trixie-root-setup.sh"
VENV = "/opt/sparc-agent-venv"  # inside the root
WHEELS = "/opt/sparc-agent-wheels"  # inside the root
VENV_PYTHON = f"{VENV}/bin/python"
INNER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# the stand-ins the e2e stacks use (py:base and ws-bridge are not needed inside)
IMAGES = {
    "bb": "localhost/sparc-test/bb:test",
    "riva": "nvcr.io/nvidia/riva/riva-speech:2.16.0-server",
    "mas": "localhost/sparc/mas-server:latest",
    "signaling": "localhost/sparc/signaling-server:latest",
    "coturn": "docker.io/coturn/coturn:4.6",
    "unity": "localhost/sparc/unity-server:latest",
}
# Every podman inside (ours, sparc-agent's, the units') runs with PODMAN_ENV: its own store and settings,
# so that nothing changes for other users of the root (scripts/trixie-root-setup.sh smoke: vfs store).
#  - overlay, not the root's default vfs: vfs copies every image per container (fresh apply of the test
#    stack 12-18 s instead of ~5 s); overlay works in the root since the script bind-mounts it on itself
#  - its own network: the root's podman has its own IPAM (its /run is a tmpfs), so on the default network
#    "podman" (podman0, 10.88.0.0/16) it would hand out the addresses the host's podman hands out, on
#    the same bridge
STORAGE_CONF = "/etc/containers/sparc-agent-tests/storage.conf"  # inside the root
CONF_OVERRIDE = "/etc/containers/sparc-agent-tests/containers.conf"  # inside the root
NETWORK = "sparc5"
NETWORK_SUBNET = "10.89.77.0/24"
CONFIG_FILES = {
    STORAGE_CONF: """# written by tests/support/trixiehost.py
[storage]
driver = "overlay"
runroot = "/run/containers/storage-sparc-tests"
graphroot = "/var/lib/containers/storage-sparc-tests"
""",
    CONF_OVERRIDE: f"""# written by tests/support/trixiehost.py (CONTAINERS_CONF_OVERRIDE: read after /etc's)
[engine]
tmp_dir = "/run/libpod-sparc-tests"
[network]
default_network = "{NETWORK}"
""",
}
PODMAN_ENV = {
    "PODMAN_IGNORE_CGROUPSV1_WARNING": "1",
    "CONTAINERS_STORAGE_CONF": STORAGE_CONF,
    "CONTAINERS_CONF_OVERRIDE": CONF_OVERRIDE,
}
IMAGE_RECORD = "var/lib/containers/storage-sparc-tests/sparc-standins.json"  # ref -> host image id
NAMESPACE = SHARED_STATE / "trixie.mntns"  # the root's mount namespace, kept by a bind mount


# --------------------------------------------------------------------------------------------------
# skip on a laptop, fail in CI


def trixie_problems() -> list[str]:
    problems = []
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} missing (util-linux)")
    if not (ROOT / ".sparc-trixie-root").is_file() and shutil.which("mmdebstrap") is None:
        problems.append(f"{ROOT} not built and mmdebstrap missing (apt-get install mmdebstrap)")
    if not SETUP.is_file():
        problems.append(f"{SETUP} missing")
    return problems


def require_trixie() -> None:
    """testhost.require_testhost's rule: skip, or fail under CI=true / SPARC_REQUIRE_TESTHOST=1."""
    require_testhost()
    problems = trixie_problems()
    if not problems:
        return
    unavailable(
        "trixie test root not available: " + "; ".join(problems) + " (see scripts/trixie-root-setup.sh)"
    )


# --------------------------------------------------------------------------------------------------
# running things inside


def inside(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 120,
    input: str | None = None,
    podman_env: dict[str, str] = PODMAN_ENV,
) -> subprocess.CompletedProcess[str]:
    """Run argv in the root with a clean environment (plus `env`)."""
    full = {"PATH": INNER_PATH, "HOME": "/root", "LANG": "C.UTF-8", **podman_env, **(env or {})}
    return run(enter(argv), env=full, check=check, timeout=timeout, input=input)


def enter(argv: Sequence[str]) -> list[str]:
    """argv run in the root's mount namespace (see _make_namespace), where the root is `/`."""
    return ["nsenter", f"--mount={NAMESPACE}", "--", *argv]


def _make_namespace() -> None:
    """A mount namespace whose root is the trixie root (pivot_root, not chroot), kept by a bind mount.

    Under chroot, podman's containers pivot_root from a root that is not their namespace's: runc then
    attaches the container's root where the trixie root sits in the host's tree, and `podman exec` (so
    also the exec probe and podman's health checks) enters the container's namespaces but lands in the
    host's root directory. With the trixie root as the namespace's real root, exec lands in the container.
    Mounts are copied into it when it is made: make it after everything under the root is mounted."""
    if _is_mounted(NAMESPACE):
        run(["umount", str(NAMESPACE)])  # one from an earlier mount of the root: its copies are stale
    NAMESPACE.touch()
    pivot = f"cd {ROOT} && mkdir -p .oldroot && pivot_root . .oldroot && umount -l /.oldroot"
    run(["unshare", f"--mount={NAMESPACE}", "--propagation", "private", "sh", "-c", pivot])


def inner_podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return inside(["podman", *args], check=check, timeout=timeout)


def _is_mounted(path: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)], check=False).returncode == 0


def _setup(command: str, timeout: float = 600) -> str:
    proc = run([str(SETUP), command], check=False, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{SETUP.name} {command} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _bind_journal() -> None:
    """The host's journald socket dir and journal files, seen at the same paths inside the root."""
    for src, ro in (("/run/systemd/journal", False), ("/run/log/journal", True)):
        dst = ROOT / src.lstrip("/")
        if _is_mounted(dst) or not Path(src).is_dir():
            continue
        dst.mkdir(parents=True, exist_ok=True)
        run(["mount", "--bind", src, str(dst)])
        if ro:
            run(["mount", "-o", "remount,bind,ro", str(dst)])


def _configure_podman() -> None:
    for path, text in CONFIG_FILES.items():
        real = ROOT / path.lstrip("/")
        if not real.is_file() or real.read_text() != text:
            real.parent.mkdir(parents=True, exist_ok=True)
            real.write_text(text)
    # No DNS (aardvark-dns): a pod's containers share one network namespace, and netavark would start
    # aardvark-dns through the absent system manager ("Failed to connect to system scope bus").
    config = ROOT / "etc/containers/networks" / f"{NETWORK}.json"
    net = json.loads(config.read_text()) if config.is_file() else {}
    if (
        net.get("network_interface") != NETWORK
        or net.get("dns_enabled")
        or [s.get("subnet") for s in net.get("subnets", [])] != [NETWORK_SUBNET]
    ):
        # a default network without a file is made up in memory ("network exists" says yes), on podman0
        # and 10.88.0.0/16: create it under the default settings
        env = {k: v for k, v in PODMAN_ENV.items() if k != "CONTAINERS_CONF_OVERRIDE"}
        inside(["podman", "network", "rm", "-f", NETWORK], podman_env=env, check=False)
        inside(
            ["podman", "network", "create", "--disable-dns", "--subnet", NETWORK_SUBNET,
             "--interface-name", NETWORK, NETWORK],
            podman_env=env,
        )  # fmt: skip


@pytest.fixture(scope="session")
def trixie_root(journald: Path) -> Iterator[Path]:
    """The root, built (cached across runs by the script's stamp) and mounted for this session."""
    require_trixie()
    with root_mounted() as root:
        yield root


@contextlib.contextmanager
def root_mounted() -> Iterator[Path]:
    """The root mounted while in use (benchmarks use this too; journald must be running).

    Concurrent users share the mounts: each registers its PID; the last one to leave unmounts, and
    only if this plugin mounted (a root someone mounted by hand is left as it was)."""
    users = SHARED_STATE / "trixie.users"
    ours = SHARED_STATE / "trixie.mounted-by-plugin"
    me = users / str(os.getpid())
    with _locked("trixie"):
        users.mkdir(parents=True, exist_ok=True)
        me.touch()
        fresh = not _is_mounted(ROOT)
        if fresh:
            t0 = time.monotonic()
            print(_setup("build"), end="")  # idempotent: "up to date" in ~0 s, else ~60 s
            print(f"trixie root: build check {time.monotonic() - t0:.1f} s")
            _setup("mount")
            ours.touch()
        _bind_journal()
        if fresh or not _is_mounted(NAMESPACE):
            _make_namespace()
        _configure_podman()
    try:
        yield ROOT
    finally:
        with _locked("trixie"):
            me.unlink(missing_ok=True)
            alive = [p for p in users.iterdir() if p.name.isdigit() and _pid_alive(int(p.name))]
            for stale in set(users.iterdir()) - set(alive):
                stale.unlink(missing_ok=True)
            if not alive and ours.exists():
                if _is_mounted(NAMESPACE):
                    run(["umount", str(NAMESPACE)])
                _setup("umount")
                ours.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# sparc-agent inside the root


def _project_dependencies() -> list[str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps: list[str] = data["project"]["dependencies"]
    return deps


def _source_files() -> list[Path]:
    files = [REPO / "pyproject.toml", REPO / "README.md"]
    for top in ("sparc_agent",):
        files += sorted(p for p in (REPO / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files


def _digest(parts: Sequence[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def trixie_agent(trixie_root: Path) -> str:
    """sparc-agent from this working tree, installed as a wheel into a venv inside the root; its python.

    The venv (deps from PyPI, downloaded on the host for cp313) is rebuilt only when the dependency list
    changes, the wheel only when the sources change."""
    deps = _project_dependencies()
    venv = trixie_root / VENV.lstrip("/")
    wheels = trixie_root / WHEELS.lstrip("/")
    deps_key = _digest([json.dumps(deps).encode(), b"v1"])
    src_key = _digest([str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() for p in _source_files()])
    with _locked("trixie-venv"):
        stamp = venv / "sparc-deps.stamp"
        if not stamp.is_file() or stamp.read_text() != deps_key:
            t0 = time.monotonic()
            shutil.rmtree(venv, ignore_errors=True)
            shutil.rmtree(wheels, ignore_errors=True)
            wheels.mkdir(parents=True)
            # the root's python has no ensurepip: a venv without pip, then pip run from its wheel
            platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 28, 34)]
            run(
                [sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels), "--only-binary=:all:",
                 "--python-version=3.13", "--implementation=cp", "--abi=cp313", *platforms,
                 "pip", *deps],
                timeout=300,
            )  # fmt: skip
            inside(["python3", "-m", "venv", "--without-pip", VENV])
            pip_wheel = next(wheels.glob("pip-*.whl")).name
            inside(
                [VENV_PYTHON, f"{WHEELS}/{pip_wheel}/pip", "install", "-q", "--no-index",
                 "--find-links", WHEELS, "pip", *deps],
                timeout=300,
            )  # fmt: skip
            stamp.write_text(deps_key)
            print(f"trixie root: venv with sparc-agent deps in {time.monotonic() - t0:.1f} s")
        agent_stamp = venv / "sparc-agent.stamp"
        if not agent_stamp.is_file() or agent_stamp.read_text() != src_key:
            t0 = time.monotonic()
            with tempfile.TemporaryDirectory(prefix="sparc-wheel-") as tmp:
                src = Path(tmp) / "src"
                for path in _source_files():
                    dst = src / path.relative_to(REPO)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, dst)
                out = Path(tmp) / "out"
                run(
                    [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                     "-w", str(out), str(src)],
                    timeout=300,
                )  # fmt: skip
                wheel = next(out.glob("sparc_agent-*.whl"))
                for old in wheels.glob("sparc_agent-*.whl"):
                    old.unlink()
                shutil.copy2(wheel, wheels / wheel.name)
            inside(
                [VENV_PYTHON, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--force-reinstall",
                 f"{WHEELS}/{wheel.name}"],
                timeout=300,
            )  # fmt: skip
            agent_stamp.write_text(src_key)
            print(f"trixie root: sparc-agent wheel installed in {time.monotonic() - t0:.1f} s")
    return VENV_PYTHON


# --------------------------------------------------------------------------------------------------
# images


def _host_image_id(ref: str) -> str:
    return podman("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


@pytest.fixture(scope="session")
def trixie_images(trixie_root: Path, standin_images: dict[str, str]) -> dict[str, str]:
    """The stand-ins in the root's store (`podman save` on the host, `podman load` inside), by image id."""
    load_images(trixie_root)
    return dict(standin_images)


def load_images(root: Path = ROOT) -> None:
    """Copy the host's stand-in images into the root's store where they are missing or stale."""
    record_path = root / IMAGE_RECORD
    with _locked("trixie-images"):
        record: dict[str, str] = json.loads(record_path.read_text()) if record_path.is_file() else {}
        want = {ref: _host_image_id(ref) for ref in IMAGES.values()}
        stale = [
            ref
            for ref, image_id in want.items()
            if record.get(ref) != image_id or inner_podman("image", "exists", ref, check=False).returncode
        ]
        if stale:
            t0 = time.monotonic()
            archive = root / "var/tmp/sparc-standins.tar"
            archive.unlink(missing_ok=True)
            try:
                podman("save", "--multi-image-archive", "-o", str(archive), *stale, timeout=600)
                inner_podman("load", "-q", "-i", "/var/tmp/sparc-standins.tar", timeout=600)
            finally:
                archive.unlink(missing_ok=True)
            inner_podman("image", "prune", "-f", check=False)  # tags that moved leave dangling images
            record.update({ref: want[ref] for ref in stale})
            record_path.parent.mkdir(parents=True, exist_ok=True)
            record_path.write_text(json.dumps(record, indent=2))
            print(f"trixie root: loaded {len(stale)} images in {time.monotonic() - t0:.1f} s")


# --------------------------------------------------------------------------------------------------
# user managers inside the root


@dataclass
class TrixieManager(UserManager):
    """A `systemd --user` (257) running in the trixie root's mount namespace, in its own cgroup subtree.

    `root` is /tmp/NAME, the same path inside the root and (through a symlink) on the host."""

    rootfs: Path = ROOT

    @property
    def real_root(self) -> Path:
        return self.rootfs / str(self.root).lstrip("/")

    def environ(self, **extra: str) -> dict[str, str]:
        """A clean environment for commands run inside (the host's venv, CONTAINERS_CONF... stay out)."""
        return {"PATH": INNER_PATH, "HOME": "/root", "LANG": "C.UTF-8", **PODMAN_ENV, **self.env, **extra}

    def command(self, argv: Sequence[str]) -> list[str]:
        """argv, run inside the root (use with .environ())."""
        return enter(argv)

    def sparc_command(self, *args: str) -> list[str]:
        return self.command([VENV_PYTHON, "-m", "sparc_agent.cli.main", *args])

    def systemctl(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        argv = self.command(["systemctl", "--user", "--no-pager", *args])
        return run(argv, env=self.environ(), check=check, timeout=timeout)

    def busctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(
            self.command(["busctl", "--user", *args]), env=self.environ(), check=check, timeout=timeout
        )

    def podman(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return inner_podman(*args, check=check, timeout=timeout)


def _new_trixie_manager(name: str) -> TrixieManager:
    inner = Path("/tmp") / name
    env = {
        "XDG_RUNTIME_DIR": str(inner / "run"),
        "XDG_CONFIG_HOME": str(inner / "cfg"),
        "XDG_STATE_HOME": str(inner / "state"),
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path={inner / 'run' / 'bus'}",
    }
    mgr = TrixieManager(name=name, root=inner, env=env, rootfs=ROOT)
    mgr.real_root.mkdir(parents=True)
    if inner.is_symlink() or inner.exists():
        raise RuntimeError(f"{inner} exists on the host")
    inner.symlink_to(mgr.real_root)
    for d in (mgr.run_dir, mgr.state_dir, mgr.unit_dir, mgr.quadlet_dir, mgr.root / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
    mgr.run_dir.chmod(0o700)
    # else every quadlet unit waits ~90 s for the (absent) system manager's network-online.target
    (mgr.unit_dir / "podman-user-wait-network-online.service").symlink_to("/dev/null")
    for cg in mgr.cgroup_dirs():
        cg.mkdir(parents=True, exist_ok=True)
    return mgr


def _launch_trixie_manager(mgr: TrixieManager, timeout: float = 30) -> None:
    env = {**mgr.environ(), "USER": "root", "LOGNAME": "root"}
    what = f"user manager {mgr.name} in {mgr.rootfs}"
    spawn_manager(mgr, mgr.command, env, "/lib/systemd/systemd", timeout, what)


def _stop(pid: int, timeout: float = 60) -> bool:
    """SIGTERM (= systemctl --user exit), SIGKILL after timeout; True if SIGKILL was needed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return False
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            return True
        time.sleep(0.05)
    return False


def stop_trixie_manager(mgr: TrixieManager) -> list[str]:
    problems: list[str] = []
    if mgr.pid and _stop(mgr.pid):
        problems.append(f"manager {mgr.name} (pid {mgr.pid}) needed SIGKILL")
    leftovers = _cleanup_podman(mgr, mgr.podman)
    if leftovers:
        print(f"trixiehost: removed podman objects of {mgr.name}: {leftovers}")
    killed = _remove_cgroups(mgr)
    if killed:
        problems.append(f"killed processes left in {mgr.slice}: {killed}")
    return problems


@pytest.fixture
def trixie_manager(trixie_root: Path, trixie_agent: str) -> Iterator[TrixieManager]:
    """A fresh user manager inside the root (own cgroup subtree, own XDG dirs), stopped at teardown."""
    with trixie_manager_running() as (mgr, problems):
        yield mgr
    if problems:
        pytest.fail("trixie_manager teardown: " + "; ".join(problems), pytrace=False)


@contextlib.contextmanager
def trixie_manager_running(show_logs: bool = True) -> Iterator[tuple[TrixieManager, list[str]]]:
    """A user manager inside the mounted root; at exit it is stopped, its leftovers removed, and what
    was wrong added to the yielded list of problems (its journal printed first, if show_logs)."""
    name = f"tx-{os.urandom(3).hex()}"
    mgr = _new_trixie_manager(name)
    problems: list[str] = []
    try:
        _launch_trixie_manager(mgr)
        yield mgr, problems
    finally:
        if show_logs:
            print(f"--- journal of {mgr.slice} ---\n{mgr.journal()[-6000:]}")
            with contextlib.suppress(OSError):
                print(f"--- {mgr.log_path} ---\n{mgr.log_path.read_text(errors='replace')[-3000:]}")
        problems += stop_trixie_manager(mgr)
        if mgr.root.is_symlink():
            mgr.root.unlink()
        if os.environ.get("SPARC_KEEP_TESTHOST") != "1":
            shutil.rmtree(mgr.real_root, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# e2e tests on both hosts


@dataclass
class ApplyHost:
    kind: str  # "bookworm" (podman 4.3.1, quadlet 5.4, systemd 252) or "trixie" (podman 5.4, systemd 257)
    mgr: UserManager
    images: dict[str, str]
    tmp: Path  # scratch dir at a path sparc-agent sees too (profiles, secret files)

    def podman(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """podman of this host's store (the root's own one for trixie)."""
        if isinstance(self.mgr, TrixieManager):
            return self.mgr.podman(*args, check=check, timeout=timeout)
        return podman(*args, check=check, timeout=timeout)


@pytest.fixture(params=["bookworm", "trixie"])
def apply_host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ApplyHost]:
    if request.param == "bookworm":
        mgr: UserManager = request.getfixturevalue("user_manager")
        host = ApplyHost("bookworm", mgr, request.getfixturevalue("standin_images"), tmp_path)
    else:
        mgr = request.getfixturevalue("trixie_manager")
        host = ApplyHost("trixie", mgr, request.getfixturevalue("trixie_images"), mgr.root / "tmp")
    try:
        yield host
    finally:
        if host.kind == "bookworm":  # testhost's teardown does not remove secrets
            secrets = [
                n for n in podman("secret", "ls", "--format", "{{.Name}}").stdout.split() if mgr.owns(n)
            ]
            if secrets:
                podman("secret", "rm", *secrets, check=False)
