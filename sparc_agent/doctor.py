"""`sparc-agent doctor`: is this machine ready to run a stack rootless? One check per item, each with a fix.

Every check returns a `Check`: status ok / warn / fail, what it found, and (unless ok) what to do about
it. `run()` runs them all; the CLI exits 0 when all are ok, 1 with warnings only, 3 with a blocking
problem. Checks only read: files under /etc, /sys, /proc, /dev, `podman`/`systemctl`/`loginctl` output,
a D-Bus call to the user manager, and test binds of the profile's ports (closed at once).

The environment can point a check elsewhere (tests use this; so can a site with odd paths):
  SPARC_QUADLET             the quadlet binary to look for, instead of /usr/libexec/podman/quadlet ...
                            (read by host.detect, so `render` and `apply` use the same one)
  SPARC_USER_GENERATOR_DIRS colon-separated systemd user-generator dirs to look for its link in
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import json
import os
import pwd
import re
import shutil
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sparc_agent.host import process
from sparc_agent.host.detect import HostVersions, Tool, detect
from sparc_agent.profile.names import LABEL_STACK
from sparc_agent.versions import (
    PODMAN_DELETES_ID_FILES,
    PODMAN_VOLUME_CREATE_IGNORE,
    QUADLET_SINCE,
    SYSTEMD_RESTART_STEPS,
    Target,
    Version,
)

if TYPE_CHECKING:
    from sparc_agent.profile.model import Profile

Status = Literal["ok", "warn", "fail"]
EXIT_CODES: dict[Status, int] = {"ok": 0, "warn": 1, "fail": 3}
USER_GENERATOR_DIRS = (
    "/etc/systemd/user-generators",
    "/run/systemd/user-generators",
    "/usr/local/lib/systemd/user-generators",
    "/usr/lib/systemd/user-generators",
)
CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
SUPPORT = "on PubApps, ask UF Research Computing support"
# free space below which pulling the SPARC images fails (Riva's image alone is ~20 GB unpacked)
DISK_FAIL_GB = 5.0
DISK_WARN_GB = 30.0
SUBID_COUNT = 65536  # what useradd gives and what most images need (uids up to 65535 inside)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    message: str
    hint: str = ""


def ok(name: str, message: str) -> Check:
    return Check(name, "ok", message)


def warn(name: str, message: str, hint: str) -> Check:
    return Check(name, "warn", message, hint)


def fail(name: str, message: str, hint: str) -> Check:
    return Check(name, "fail", message, hint)


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def status(self) -> Status:
        worst: Status = "ok"
        for c in self.checks:
            if c.status == "fail":
                return "fail"
            if c.status == "warn":
                worst = "warn"
        return worst

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "checks": [asdict(c) for c in self.checks],
        }

    def format(self) -> str:
        width = max((len(c.name) for c in self.checks), default=0)
        lines = []
        for c in self.checks:
            lines.append(f"{c.status:<4}  {c.name:<{width}}  {c.message}")
            if c.hint:
                lines.append(f"{'':<4}  {'':<{width}}  fix: {c.hint}")
        counts = {s: sum(1 for c in self.checks if c.status == s) for s in ("ok", "warn", "fail")}
        lines.append(f"{counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} blocking problems")
        return "\n".join(lines)


# ---------------------------------------------------------------- facts shared by several checks


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class Host:
    """What the checks look at, read lazily and once. Every outside path comes from here."""

    def __init__(self, env: Mapping[str, str] | None = None, root: Path = Path("/")) -> None:
        self.env = dict(os.environ if env is None else env)
        self.root = root  # tests may point the file checks at a fake tree
        self.uid = os.geteuid()
        try:
            self.user = pwd.getpwuid(self.uid).pw_name
        except KeyError:
            self.user = self.env.get("USER") or getpass.getuser()

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def which(self, name: str) -> str | None:
        return shutil.which(name, path=self.env.get("PATH", os.defpath))

    def run(self, argv: Sequence[str], timeout: float = 20) -> tuple[int, str, str]:
        done = process.run(argv, env=self.env, timeout=timeout)
        return done.returncode, done.stdout, done.stderr

    @property
    def rootless(self) -> bool:
        return self.uid != 0

    @cached_property
    def versions(self) -> HostVersions:
        """podman, quadlet, systemd and the distribution: the detection apply and render use too."""
        return detect(self.env, self.root)

    @property
    def podman(self) -> Tool:
        return self.versions.podman

    @property
    def quadlet(self) -> Tool:
        return self.versions.quadlet

    @property
    def systemd(self) -> Tool:
        return self.versions.systemd

    @cached_property
    def podman_info(self) -> dict[str, Any] | None:
        path = self.podman.path
        if path is None:
            return None
        rc, out, _ = self.run([path, "info", "--format", "json"], timeout=60)
        if rc != 0:
            return None
        with contextlib.suppress(ValueError):
            info = json.loads(out)
            return info if isinstance(info, dict) else None
        return None

    @cached_property
    def local_images(self) -> set[str] | None:
        path = self.podman.path
        if path is None:
            return None
        rc, out, _ = self.run([path, "images", "--format", "{{.Repository}}:{{.Tag}}"], timeout=60)
        return {line.strip() for line in out.splitlines() if line.strip()} if rc == 0 else None


# ---------------------------------------------------------------- the checks


def check_os(host: Host) -> Check:
    return ok("os", host.versions.distro or "unknown distribution (no os-release file)")


def check_podman(host: Host) -> Check:
    path, version, text = host.podman.path, host.podman.version, host.podman.text
    if path is None:
        return fail(
            "podman",
            "podman not found on PATH",
            f"install podman >= 4.4 (RHEL 9: `dnf install podman`, needs an admin; {SUPPORT})",
        )
    if version is None:
        return fail(
            "podman", f"{path} --version printed no version", f"run `{path} --version` and fix podman"
        )
    if version < QUADLET_SINCE["quadlet"]:
        notes = [
            f"no `volume create --ignore` (needs {PODMAN_VOLUME_CREATE_IGNORE}): volumes without .volume"
        ]
        if version < PODMAN_DELETES_ID_FILES:
            notes.append("leaves id files behind: units get an `rm -f %t/%N.cid` line")
        return warn(
            "podman",
            f"podman {text}: works with fallbacks ({'; '.join(notes)})",
            f"podman >= {PODMAN_DELETES_ID_FILES} avoids the fallbacks"
            " (RHEL 9 ships 5.x: `dnf update podman`)",
        )
    return ok("podman", f"podman {text} at {path}")


def check_quadlet(host: Host) -> Check:
    path, version, text = host.quadlet.path, host.quadlet.version, host.quadlet.text
    looked = host.versions.quadlet_looked
    podman_version = host.podman.version
    if path is None:
        return fail(
            "quadlet",
            f"no quadlet generator (looked for {', '.join(looked)})",
            "quadlet ships with podman >= 4.4 as /usr/libexec/podman/quadlet: install or update podman"
            f" (needs an admin; {SUPPORT})",
        )
    dirs = tuple(
        d
        for d in (host.env.get("SPARC_USER_GENERATOR_DIRS") or ":".join(USER_GENERATOR_DIRS)).split(":")
        if d
    )
    links = [host.path(d) / "podman-user-generator" for d in dirs]
    linked = next((str(p) for p in links if p.exists()), None)
    if linked is None:
        return fail(
            "quadlet",
            f"quadlet is at {path} but no user generator runs it"
            f" (no podman-user-generator in {', '.join(dirs)})",
            f"an admin must run `ln -s {path} /usr/lib/systemd/user-generators/podman-user-generator`"
            f" (the podman package normally does; {SUPPORT})",
        )
    target = Target(podman=podman_version or version or Version(0), quadlet=version or Version(0))
    allows = [f for f in QUADLET_SINCE if target.has(f)]
    lacks = [f"{f} (quadlet {v})" for f, v in QUADLET_SINCE.items() if not target.has(f)]
    message = f"quadlet {text or '?'} at {path}, run by {linked}; allows {', '.join(allows) or 'nothing'}"
    if lacks:
        message += f"; lacks {', '.join(lacks)}"
    if version is None or not target.has("quadlet"):
        return fail(
            "quadlet",
            message,
            f"quadlet >= 4.4 is needed: update podman (needs an admin; {SUPPORT})",
        )
    if lacks:
        return warn(
            "quadlet",
            message,
            "sparc-agent falls back where it can (without the atomic switch, apply journals its file"
            " writes one by one: docs/architecture.md); podman >= 5.3 has every feature",
        )
    return ok("quadlet", message)


def check_systemd(host: Host) -> Check:
    found, text = host.systemd.version, host.systemd.text
    if found is None:
        return fail(
            "systemd", "systemctl not found (or printed no version)", "sparc-agent needs systemd >= 247"
        )
    version = found.major
    note = (
        "restart backoff grows natively (RestartSteps=)"
        if version >= SYSTEMD_RESTART_STEPS
        else f"restart backoff is a fixed delay (RestartSteps= needs systemd {SYSTEMD_RESTART_STEPS})"
    )
    if version < 247:
        return fail(
            "systemd", f"systemd {text}: too old", "sparc-agent needs systemd >= 247 (RHEL 9 has 252)"
        )
    return ok("systemd", f"systemd {text}; {note}")


def _bus_address(host: Host) -> str:
    """The user bus, found the way sd-bus finds it (systemd.default_address, for this Host's env)."""
    address = host.env.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime = host.env.get("XDG_RUNTIME_DIR") or f"/run/user/{host.uid}"
    return f"unix:path={runtime}/bus"


def check_user_manager(host: Host) -> Check:
    import asyncio

    from sparc_agent.errors import SparcError
    from sparc_agent.host.systemd import UserManager

    address = _bus_address(host)
    hint = (
        "log in over ssh (not `su`/`sudo -u`, which start no user manager), or enable linger"
        f" (`loginctl enable-linger {host.user}`); XDG_RUNTIME_DIR should be /run/user/{host.uid}"
    )

    async def probe() -> tuple[str, str]:
        async with await UserManager.connect(address, manager_timeout=3) as mgr:
            return await mgr.version(), await mgr.system_state()

    try:
        version, state = asyncio.run(asyncio.wait_for(probe(), 10))
    except SparcError as exc:
        return fail("user-manager", str(exc), hint)
    except (TimeoutError, OSError) as exc:
        return fail("user-manager", f"no answer from the user manager at {address}: {exc!r}", hint)
    if state not in ("running", "degraded"):
        return warn(
            "user-manager", f"systemd {version} at {address} is {state}", "wait, or check its journal"
        )
    note = " (some units failed: `systemctl --user --failed`)" if state == "degraded" else ""
    return ok("user-manager", f"systemd {version} at {address} is {state}{note}")


def check_linger(host: Host) -> Check:
    if not host.rootless:
        return ok("linger", "running as root: linger matters only for rootless users")
    hint = (
        f"run `loginctl enable-linger {host.user}`; if it says 'Access denied' an admin must do it"
        f" ({SUPPORT} to enable linger for {host.user})"
    )
    if host.path(f"/var/lib/systemd/linger/{host.user}").exists():
        return ok("linger", f"on for {host.user}: the stack keeps running after you log out")
    loginctl = host.which("loginctl")
    if loginctl is not None:
        rc, out, err = host.run([loginctl, "show-user", host.user, "-p", "Linger", "--value"])
        if rc == 0 and out.strip() == "yes":
            return ok("linger", f"on for {host.user}: the stack keeps running after you log out")
        if rc == 0 and out.strip() == "no":
            return warn("linger", f"off for {host.user}: the stack stops when your last session ends", hint)
        why = _first_line(err) or f"loginctl exited {rc}"
        return warn(
            "linger", f"cannot tell whether linger is on ({why}); no /var/lib/systemd/linger entry", hint
        )
    return warn("linger", f"no /var/lib/systemd/linger/{host.user} and no loginctl to ask", hint)


def check_cgroups(host: Host) -> Check:
    base = host.path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").is_file():
        own = _own_cgroup(host, "0")
        delegated = _read_words(base / own.lstrip("/") / "cgroup.controllers") if own is not None else None
        want = {"cpu", "memory", "pids"}
        if delegated is None:
            return warn(
                "cgroups",
                "cgroup v2, but this process's cgroup is unknown",
                "run doctor from a login shell or a user unit",
            )
        missing = sorted(want - delegated)
        if host.rootless and missing:
            return warn(
                "cgroups",
                f"cgroup v2; not delegated to you: {', '.join(missing)}"
                f" (have: {' '.join(sorted(delegated))})",
                "resources.cpus/memory/pids limits of the profile cannot be enforced; an admin can add"
                " `Delegate=cpu cpuset io memory pids` in a drop-in for user@.service",
            )
        return ok("cgroups", f"cgroup v2; controllers: {' '.join(sorted(delegated)) or 'none'}")
    kind = "hybrid (v1 controllers + cgroup2 at unified)" if (base / "unified").is_dir() else "v1"
    if host.rootless:
        return warn(
            "cgroups",
            f"cgroup {kind}: rootless podman cannot use the v1 controllers; sparc-agent renders"
            " --cgroups=enabled and resource limits are not enforced",
            "boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1; RHEL 9's default) to enforce limits",
        )
    return ok("cgroups", f"cgroup {kind} (root)")


def _own_cgroup(host: Host, hierarchy: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in host.path("/proc/self/cgroup").read_text().splitlines():
            num, _, rest = line.partition(":")
            _, _, path = rest.partition(":")
            if num == hierarchy:
                # a process in .../user@UID.service/app.slice/x.scope: what user@ got delegated matters
                m = re.match(r"(.*/user@\d+\.service)(/|$)", path)
                return m.group(1) if m else path
    return None


def _read_words(path: Path) -> set[str] | None:
    try:
        return set(path.read_text().split())
    except OSError:
        return None


def _subids(host: Host, kind: Literal["uid", "gid"]) -> Check:
    name = f"sub{kind}"
    if not host.rootless:
        return ok(name, "root: no subordinate ids needed")
    hint = (
        f"an admin must add a range for {host.user}: `usermod --add-sub{kind}s 100000-165535 {host.user}`"
        f" ({SUPPORT}), then run `podman system migrate`"
    )
    ranges: list[tuple[int, int]] = []
    source = f"/etc/sub{kind}"
    getsubids = host.which("getsubids")
    if getsubids is not None:  # asks nsswitch too (FreeIPA/sssd sites keep ranges outside /etc)
        rc, out, _ = host.run([getsubids, *(["-g"] if kind == "gid" else []), host.user])
        if rc == 0:
            source = "getsubids"
            for line in out.splitlines():
                m = re.match(r"\s*\d+:\s*\S+\s+(\d+)\s+(\d+)", line)
                if m:
                    ranges.append((int(m.group(1)), int(m.group(2))))
    if not ranges:
        with contextlib.suppress(OSError):
            for line in host.path(f"/etc/sub{kind}").read_text().splitlines():
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in (host.user, str(host.uid)) and parts[2].isdigit():
                    ranges.append((int(parts[1]), int(parts[2])))
        source = f"/etc/sub{kind}"
    if not ranges:
        return fail(name, f"no /etc/sub{kind} entry for {host.user}: rootless podman cannot run images", hint)
    total = sum(count for _, count in ranges)
    listed = ", ".join(f"{start}+{count}" for start, count in ranges)
    if total < SUBID_COUNT:
        return warn(name, f"{host.user} has only {total} sub{kind}s ({listed}, from {source})", hint)
    return ok(name, f"{host.user}: {listed} (from {source})")


def check_subuid(host: Host) -> Check:
    return _subids(host, "uid")


def check_subgid(host: Host) -> Check:
    return _subids(host, "gid")


def check_tun(host: Host) -> Check:
    path = host.path("/dev/net/tun")
    hint = f"an admin must run `modprobe tun` and make /dev/net/tun mode 0666 ({SUPPORT})"
    if not path.exists():
        return fail(
            "tun", "/dev/net/tun is missing: rootless networking (slirp4netns/pasta) cannot start", hint
        )
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as exc:
        if host.rootless:
            return fail("tun", f"cannot open /dev/net/tun ({exc.strerror}): rootless networking fails", hint)
        return warn("tun", f"cannot open /dev/net/tun ({exc.strerror})", hint)
    os.close(fd)
    return ok("tun", "/dev/net/tun opens read-write")


def _wanted_gpus(profile: Profile | None) -> set[str] | None:
    """CDI device names the profile asks for (None: no profile given)."""
    if profile is None:
        return None
    from sparc_agent.render import _gpu_devices

    wanted: set[str] = set()
    for svc in profile.services.values():
        wanted.update(d.split("=", 1)[1] for d in _gpu_devices(svc.gpus))
    return wanted


def _cdi_devices(host: Host) -> tuple[set[str], str]:
    """nvidia.com/gpu device names known to CDI, and where they came from."""
    ctk = host.which("nvidia-ctk")
    if ctk is not None:
        rc, out, _ = host.run([ctk, "cdi", "list"])
        if rc == 0:
            found = set(re.findall(r"nvidia\.com/gpu=(\S+)", out))
            if found:
                return found, "nvidia-ctk cdi list"
    import yaml

    found, files = set(), []
    for d in CDI_DIRS:
        directory = host.path(d)
        for spec in sorted(directory.glob("*")) if directory.is_dir() else []:
            if spec.suffix not in (".yaml", ".yml", ".json"):
                continue
            try:
                doc = yaml.safe_load(spec.read_text())
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(doc, dict) and doc.get("kind") == "nvidia.com/gpu":
                names = {str(dev.get("name")) for dev in doc.get("devices") or [] if isinstance(dev, dict)}
                if names:
                    found |= names
                    files.append(f"{d}/{spec.name}")
    return found, ", ".join(files)


def check_cdi(host: Host, profile: Profile | None) -> Check:
    wanted = _wanted_gpus(profile)
    if wanted is not None and not wanted:
        return ok("gpu-cdi", "the profile asks for no GPUs")
    found, source = _cdi_devices(host)
    hint = (
        "an admin must generate the CDI spec: `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`"
        f" ({SUPPORT})"
    )
    if not found:
        what = "no CDI spec names nvidia.com/gpu (nvidia-ctk, /etc/cdi, /var/run/cdi)"
        if wanted:
            return fail("gpu-cdi", f"{what}: services with gpus cannot start", hint)
        return warn("gpu-cdi", f"{what}: services with gpus will not start", hint)
    missing = sorted((wanted or set()) - found)
    devices = ", ".join(f"nvidia.com/gpu={n}" for n in sorted(found))
    if missing:
        return fail(
            "gpu-cdi",
            f"the profile asks for {', '.join(f'nvidia.com/gpu={m}' for m in missing)},"
            f" CDI has only {devices}",
            f"use gpus: all or existing indexes in the profile, or regenerate the CDI spec; {hint}",
        )
    return ok("gpu-cdi", f"{devices} (from {source})")


def check_gpus(host: Host, profile: Profile | None) -> list[Check]:
    """Each GPU NVML sees (name, total and used memory); with a profile, its budgets against them."""
    from sparc_agent.host.gpu import GpuUnavailable, gib, open_nvml

    wanted = _wanted_gpus(profile)
    try:
        nvml = open_nvml(host.env)
        try:
            gpus = nvml.gpus()
        finally:
            nvml.close()
    except GpuUnavailable as exc:
        if wanted:
            return [warn("gpu", f"cannot read the GPUs: {exc}", "install the NVIDIA driver and nvidia-ml-py")]
        return [ok("gpu", f"no GPU readable ({exc}); the profile needs none")]
    if not gpus:
        return [warn("gpu", "NVML lists no GPU", "check `nvidia-smi`")] if wanted else []
    found = [ok(f"gpu{g.index}", f"{g.name}: {gib(g.total)} total, {gib(g.used)} used") for g in gpus]
    return found + _gpu_budget_check(profile, min(gpus, key=lambda g: g.total))


def _gpu_budget_check(profile: Profile | None, gpu: Any) -> list[Check]:
    from sparc_agent.host.gpu import gib
    from sparc_agent.profile import rules

    if profile is None:
        return []
    budgets = {n: b for n in profile.services if (b := rules.gpu_budget_of(profile, n)) is not None}
    if not budgets:
        return []
    total = sum(budgets.values())
    declared = profile.gpu.memory if isinstance(profile.gpu.memory, int) else None
    if declared is not None and declared != gpu.total:
        note = f" (the profile declares {gib(declared)}, GPU {gpu.index} has {gib(gpu.total)})"
    else:
        note = ""
    if total > gpu.total:
        return [
            fail(
                "gpu-budget",
                f"budgets add up to {gib(total)}, more than GPU {gpu.index} ({gpu.name}) has:"
                f" {gib(gpu.total)}",
                "lower services.*.resources.gpu_memory, or run on a larger GPU",
            )
        ]
    return [ok("gpu-budget", f"budgets {gib(total)} of {gib(gpu.total)} ({gpu.name}){note}")]


def _unprivileged_port_start(host: Host) -> int:
    try:
        return int(host.path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def port_in_use(address: str, port: int, protocol: str) -> str | None:
    """Why address:port/protocol cannot be bound now (None: free). Binding is the only honest test."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as s:
        try:
            s.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "in use"
            if exc.errno == errno.EACCES:
                return "permission denied"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{address} is not an address of this machine"
            return exc.strerror or str(exc)
    return None


def _stack_running(host: Host, stack: str) -> bool:
    path = host.podman.path
    if path is None:
        return False
    label = f"label={LABEL_STACK}={stack}"
    rc, out, _ = host.run([path, "ps", "-q", "--filter", label, "--filter", "status=running"])
    return rc == 0 and bool(out.strip())


def check_ports(host: Host, profile: Profile) -> Check:
    if not profile.pod.ports:
        return ok("ports", "the profile publishes no ports")
    low = _unprivileged_port_start(host)
    busy: list[str] = []
    denied: list[str] = []
    total = 0
    for spec in profile.pod.ports:
        address = spec.host_ip or profile.pod.bind
        for port in range(spec.host[0], spec.host[1] + 1):
            total += 1
            where = f"{address}:{port}/{spec.protocol}"
            if host.rootless and port < low:
                denied.append(f"{where} (below {low}, the first port a user may bind)")
                continue
            why = port_in_use(address, port, spec.protocol)
            if why == "in use":
                busy.append(f"{where} ({_who_publishes(profile, spec.protocol, port)})")
            elif why is not None:
                denied.append(f"{where} ({why})")
    if busy and _stack_running(host, profile.name):
        return ok("ports", f"{len(busy)} of {total} ports are held by stack {profile.name} itself (running)")
    problems = []
    if busy:
        problems.append(f"in use: {', '.join(_shorten(busy))}")
    if denied:
        problems.append(f"cannot bind: {', '.join(_shorten(denied))}")
    if problems:
        first = busy[0] if busy else denied[0]
        first_port = first.split(":")[-1].split("/")[0]
        return fail(
            "ports",
            "; ".join(problems),
            f"find the owner with `ss -lntup 'sport = :{first_port}'` and stop it,"
            " or change pod.ports in the profile",
        )
    return ok("ports", f"all {total} published ports are free")


def _who_publishes(profile: Profile, protocol: str, port: int) -> str:
    from sparc_agent.host.sockets import port_holders
    from sparc_agent.profile.rules import port_publisher

    holders = port_holders(protocol, port)
    held = f"held by {', '.join(holders)}; " if holders else ""
    return f"{held}published for {port_publisher(profile, protocol, port)}"


def _shorten(items: list[str], limit: int = 6) -> list[str]:
    return items if len(items) <= limit else [*items[:limit], f"... {len(items) - limit} more"]


def _graphroot(host: Host) -> tuple[Path, str]:
    info = host.podman_info
    if info:
        root = (info.get("store") or {}).get("graphRoot")
        if root:
            return Path(root), "podman info"
    if not host.rootless:
        return Path("/var/lib/containers/storage"), "default"
    home = Path(host.env.get("HOME") or Path.home())
    data = Path(host.env.get("XDG_DATA_HOME") or home / ".local/share")
    return data / "containers" / "storage", "default"


def check_disk(host: Host) -> Check:
    root, source = _graphroot(host)
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError as exc:
        return warn("disk", f"cannot read free space at {root}: {exc.strerror}", "check the path")
    free_gb = usage.free / 1e9
    message = f"{free_gb:.1f} GB free for images at {root} (from {source})"
    hint = (
        "free space there (`podman system prune`, `podman image prune -a`) or set rootless_storage_path in"
        " ~/.config/containers/storage.conf to a bigger disk; quotas may leave less than shown"
    )
    if free_gb < DISK_FAIL_GB:
        return fail("disk", message + f": below {DISK_FAIL_GB:g} GB", hint)
    if free_gb < DISK_WARN_GB:
        return warn("disk", message + f": the SPARC images need about {DISK_WARN_GB:g} GB", hint)
    return ok("disk", message)


def check_images(host: Host, profile: Profile) -> Check:
    wanted = sorted({svc.image for svc in profile.services.values()})
    have = host.local_images
    if have is None:
        return warn(
            "images", "cannot list local images (`podman images` failed)", "fix podman first (see above)"
        )
    missing = [image for image in wanted if _normal(image) not in {_normal(h) for h in have}]
    if missing:
        return warn(
            "images",
            f"not present locally: {', '.join(missing)} (apply pulls them, which can take long)",
            "pull them first: `podman pull IMAGE` (nvcr.io needs `podman login nvcr.io` with an NGC API key,"
            " user `$oauthtoken`)",
        )
    return ok("images", f"all {len(wanted)} images are present locally")


def _normal(image: str) -> str:
    """docker.io/library/x:latest and x name the same image."""
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        name, tag = image, "latest"
    first = name.split("/")[0]
    if "/" not in name or ("." not in first and ":" not in first and first != "localhost"):
        name = "docker.io/" + (name if "/" in name else f"library/{name}")
    return f"{name}:{tag}"


# ---------------------------------------------------------------- running them


BASIC: tuple[Callable[[Host], Check], ...] = (
    check_os,
    check_podman,
    check_quadlet,
    check_systemd,
    check_user_manager,
    check_linger,
    check_cgroups,
    check_subuid,
    check_subgid,
    check_tun,
)


def check_turn_auth(profile: Profile) -> Check:
    """An open TURN relay lets anyone relay through this host, also to its internal addresses."""
    from sparc_agent.profile import rules

    found = [f.message for f in rules.open_relays(profile)]
    if not found:
        return ok("turn-auth", "no TURN/STUN port is published beyond 127.0.0.1 without auth")
    return warn(
        "turn-auth",
        found[0] + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""),
        "run coturn with --use-auth-secret and --static-auth-secret from a profile secret",
    )


def check_secret_files(host: Host, profile: Profile) -> Check:
    """A secret's source file that others can read is a leaked secret, whatever the unit files say."""
    loose = []
    for name, decl in profile.secrets.items():
        if decl.file is None:
            continue
        home = host.env.get("HOME", "~")
        path = host.path(home + decl.file[1:] if decl.file.startswith("~") else decl.file)
        try:
            mode = path.stat().st_mode & 0o777
        except OSError as exc:
            loose.append(f"secrets.{name}: {decl.file}: {exc.strerror}")
            continue
        if mode & 0o077:
            loose.append(f"secrets.{name}: {decl.file} is open to group or others (mode {mode:04o})")
    if not loose:
        return ok("secret-files", "every secret file is readable by you only")
    return warn("secret-files", "; ".join(loose), "chmod 600 the file (and keep it out of shared folders)")


def check_webrtc(profile: Profile) -> Check:
    """A webrtc probe runs its session with aiortc, an optional extra."""
    import importlib.util

    users = [n for n, s in profile.services.items() if s.health is not None and "webrtc" in s.health.apart]
    if not users:
        return ok("webrtc", "no webrtc probe in the profile")
    if importlib.util.find_spec("aiortc") is None:
        return warn(
            "webrtc",
            f"{', '.join(users)}: the webrtc probe needs aiortc, which is not installed",
            "pip install 'sparc-agent[webrtc]' (in the environment sparc-agent runs from)",
        )
    return ok("webrtc", f"aiortc is installed for the webrtc probe of {', '.join(users)}")


def run(profile: Profile | None = None, env: Mapping[str, str] | None = None) -> Report:
    host = Host(env)
    checks = [_safe(check.__name__, partial(check, host)) for check in BASIC]
    checks.append(_safe("gpu-cdi", partial(check_cdi, host, profile)))
    checks += _safe_many("gpu", partial(check_gpus, host, profile))
    if profile is not None:
        checks.append(_safe("ports", partial(check_ports, host, profile)))
    checks.append(_safe("disk", partial(check_disk, host)))
    if profile is not None:
        checks.append(_safe("images", partial(check_images, host, profile)))
        checks.append(_safe("turn-auth", partial(check_turn_auth, profile)))
        checks.append(_safe("secret-files", partial(check_secret_files, host, profile)))
        checks.append(_safe("webrtc", partial(check_webrtc, profile)))
    return Report(checks)


def _safe(name: str, check: Callable[[], Check]) -> Check:
    """A check that crashes is a finding, not a traceback."""
    try:
        return check()
    except Exception as exc:
        label = name.removeprefix("check_").replace("_", "-")
        return warn(label, f"the check itself failed: {type(exc).__name__}: {exc}", "please report this")


def _safe_many(name: str, check: Callable[[], list[Check]]) -> list[Check]:
    try:
        return check()
    except Exception as exc:
        return [warn(name, f"the check itself failed: {type(exc).__name__}: {exc}", "please report this")]


def names(checks: Iterable[Check]) -> list[str]:
    return [c.name for c in checks]
