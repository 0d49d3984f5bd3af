"""Profile -> one SLURM batch script (bash), in the style of the seeds' sparc_production.slurm.

Every value from the profile reaches bash through `sh_quote` only. Secrets are read from their file or
environment variable when the job starts and handed to the container through the environment, never
written into the script nor onto a command line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

from sparc_agent.errors import InvalidInput
from sparc_agent.export import container_port, host_ip, is_loopback, partitions, source_label
from sparc_agent.export.shell import sh_path, sh_quote, sh_words
from sparc_agent.probes import ExecSpec, GrpcSpec, HttpSpec, StunSpec, WebSocketSpec
from sparc_agent.probes.grpc import encode_request
from sparc_agent.probes.kinds import KINDS
from sparc_agent.profile.model import (
    PortSpec,
    Profile,
    Service,
    parse_memory,
)
from sparc_agent.profile.names import Names
from sparc_agent.profile.rules import probe_pod, start_order

Runtime = Literal["apptainer", "podman"]
_SLURM_WORD = re.compile(r"[A-Za-z0-9_.@+-]+")
_SLURM_PATH = re.compile(r"[A-Za-z0-9_.@+%/-]+")  # --output patterns: %j, %x, directories
# exporter defaults for services that declare no resources (override with --cpus/--mem)
DEFAULT_CPUS = 2
DEFAULT_MEM = 8 << 30
HEALTH_TIMEOUT = 120  # seconds a service may take to become healthy after its start_period


@dataclass(frozen=True)
class SlurmOptions:
    runtime: Runtime = "apptainer"
    partition: str = "hpg-ai"
    time: str = "7-00:00:00"  # seed 000's finite default
    gpus: int | None = None
    cpus: int | None = None
    mem: str | None = None
    account: str | None = None
    qos: str | None = None
    output: str | None = None


LIBRARY_MARK = "# ---- sparc-agent job library"


@cache
def library() -> str:
    """The bash library (templates/slurm-library.sh, package data) from its marker line on."""
    text = resources.files(__package__).joinpath("templates", "slurm-library.sh").read_text(encoding="utf-8")
    return text[text.index(LIBRARY_MARK) :]


def _word(flag: str, value: str, pattern: re.Pattern[str] = _SLURM_WORD) -> str:
    """#SBATCH values are read by sbatch, not bash: allow only plain words."""
    if not pattern.fullmatch(value):
        allowed = "letters, digits and _.@+-" + ("%/" if pattern is _SLURM_PATH else "")
        raise InvalidInput(f"{flag} {value!r}: not allowed (allowed: {allowed})")
    return value


def _fn(name: str) -> str:
    return name.replace("-", "_")


def _var(prefix: str, name: str) -> str:
    return f"{prefix}_{_fn(name)}"


# ---------------------------------------------------------------- resources


def needed_gpus(profile: Profile) -> int:
    """GPUs the job needs: services share the job's GPUs, like they share the VM's."""
    need = 0
    for svc in profile.services.values():
        if svc.gpus == "all":
            need = max(need, 1)
        elif isinstance(svc.gpus, int):
            need = max(need, svc.gpus)
        elif isinstance(svc.gpus, tuple):
            need = max(need, len(svc.gpus))
    return need


def default_cpus(profile: Profile) -> int:
    total = 0.0
    for svc in profile.services.values():
        given = svc.resources.cpus if svc.resources else None
        total += given if given is not None else DEFAULT_CPUS
    return max(1, math.ceil(total))


def default_mem(profile: Profile) -> int:
    total = 0
    for svc in profile.services.values():
        given = svc.resources.memory if svc.resources else None
        total += given if given is not None else DEFAULT_MEM
    return total


def slurm_mem(size: int) -> str:
    mib = math.ceil(size / (1 << 20))
    return f"{mib // 1024}G" if mib % 1024 == 0 else f"{mib}M"


@dataclass(frozen=True)
class _Job:
    gpus: int
    cpus: int
    mem: int
    seconds: int


def _job(profile: Profile, o: SlurmOptions) -> _Job:
    need = needed_gpus(profile)
    gpus = need if o.gpus is None else o.gpus
    if gpus < need:
        raise InvalidInput(f"--gpus {gpus}: a service asks for {need} GPUs (allowed: at least {need})")
    if o.cpus is not None and o.cpus < 1:
        raise InvalidInput(f"--cpus {o.cpus}: must be at least 1")
    mem = default_mem(profile)
    if o.mem is not None:
        try:
            mem = parse_memory(o.mem)
        except ValueError as exc:
            raise InvalidInput(f"--mem: {exc}") from None
    seconds = partitions.parse_time(o.time)
    partitions.check(o.partition, seconds, gpus)
    return _Job(gpus, o.cpus or default_cpus(profile), mem, seconds)


# ---------------------------------------------------------------- per service


def _grpc_request(service: str) -> str:
    """The probe's gRPC frame (the agent's own encoding) as printf %b escapes."""
    return "".join(f"\\x{b:02x}" for b in encode_request(service))


def _probe(profile: Profile, name: str, svc: Service, runtime: Runtime, notes: list[str]) -> list[str]:
    health = svc.health
    fn = f"probe_{_fn(name)}"
    if health is None:
        return [f"{fn}() {{ true; }} # no probe in the profile"]
    timeout = f"{health.timeout:g}"
    probe = health.spec
    if isinstance(probe, ExecSpec):
        argv = sh_words(probe.command)
        if runtime == "podman":
            call = f'timeout {timeout} podman exec "$POD-{name}" {argv} >/dev/null 2>&1'
        else:
            notes.append(
                f"{name}: exec probe runs in a new `apptainer exec` of the same image (host PID namespace)"
            )
            call = (
                f'timeout {timeout} apptainer exec --cleanenv "${_var("SIF", name)}" {argv} >/dev/null 2>&1'
            )
        return [f"{fn}() {{ {call}; }}"]
    port = probe.port
    if runtime == "apptainer":  # no port mapping: the process listens on the node itself
        port = container_port(profile, port, KINDS[health.kind].transport)
    if isinstance(probe, HttpSpec):
        lo, hi = probe.status
        call = f"probe_http {port} {sh_quote(probe.path)} {lo} {hi} {timeout}"
    elif isinstance(probe, WebSocketSpec):
        call = f"probe_websocket {port} {sh_quote(probe.path)} {timeout}"
    elif isinstance(probe, GrpcSpec):
        notes.append(f"{name}: grpc probe needs curl with HTTP/2 on the node, else it only checks TCP")
        call = f"probe_grpc {port} {sh_quote(_grpc_request(probe.service))} {timeout}"
    elif isinstance(probe, StunSpec):
        call = f"probe_stun {port} {timeout}"
    else:
        call = f"probe_tcp {port} {timeout}"
    if runtime == "podman" and probe_pod(profile, name):  # not published: probe where it listens
        call = f"in_pod {call}"
    return [f"{fn}() {{ {call}; }}"]


def _gpu_flags(gpus: str | int | tuple[str, ...]) -> str:
    if gpus == "all":
        return '"${JOB_GPUS[@]}"'
    if isinstance(gpus, int):
        return f'"${{JOB_GPUS[@]:0:{gpus}}}"'
    return " ".join(f"--device={sh_quote('nvidia.com/gpu=' + g)}" for g in gpus)


def _podman_run(profile: Profile, name: str, svc: Service) -> list[str]:
    args = ["podman run --rm --replace --init", f'--name "$POD-{name}" --pod "$POD"']
    if svc.gpus is not None:
        args.append(_gpu_flags(svc.gpus))
    r = svc.resources
    if r is not None:
        args += [f"--cpus={r.cpus:g}"] if r.cpus is not None else []
        args += [f"--memory={r.memory}b"] if r.memory is not None else []
        args += [f"--pids-limit={r.pids}"] if r.pids is not None else []
    args += [f"--env {sh_quote(f'{k}={v}')}" for k, v in svc.env.items()]
    args += [f"--env {var}" for var in svc.secrets]  # value from podman's own environment
    for m in svc.volumes:
        src = sh_quote(Names(profile.name).volume(m.source)) if m.is_named_volume else sh_path(m.source)
        opts = f":{','.join(m.options)}" if m.options else ""
        args.append(f"-v {src}:{sh_quote(m.target + opts)}")
    args.append(sh_quote(svc.image))
    return args


def _apptainer_run(name: str, svc: Service, notes: list[str]) -> list[str]:
    args = ["apptainer run --cleanenv"]
    if svc.gpus is not None:
        args.append("--nv")
        if svc.gpus != "all":
            notes.append(f"{name}: gpus {svc.gpus!r} -> --nv: every GPU of the job is visible")
    if svc.resources is not None:
        notes.append(
            f"{name}: cpu/memory/pids limits not applied per service (the job's cgroup is the limit)"
        )
    if svc.env:  # not --env: apptainer splits its value at commas ("A=1,2" sets A=1 and a stray "2")
        args.append(f'--env-file "$SPARC_RUN"/{name}.env')
    for m in svc.volumes:
        src = f'"$SPARC_VOLUME_DIR"/{sh_quote(m.source)}' if m.is_named_volume else sh_path(m.source)
        ro = ":ro" if "ro" in m.options else ""
        if {"z", "Z"} & set(m.options):
            notes.append(f"{name}: SELinux relabel option on {m} dropped (apptainer has none)")
        args.append(f"-B {src}:{sh_quote(m.target + ro)}")
    args.append(f'"${_var("SIF", name)}"')
    return args


def _env_file(env: Mapping[str, str]) -> str:
    """The lines of an apptainer --env-file, each one bash word. Apptainer reads the file with its
    built-in POSIX shell interpreter, so each value is quoted for that shell too."""
    return sh_words([f"{key}={sh_quote(value)}" for key, value in env.items()])


def _start(profile: Profile, name: str, svc: Service, runtime: Runtime, notes: list[str]) -> list[str]:
    """start_NAME: runs the service in the foreground (its supervisor puts it in the background)."""
    secret_env = [
        f'{"APPTAINERENV_" if runtime == "apptainer" else ""}{var}="${_var("SECRET", secret)}"'
        for var, secret in svc.secrets.items()
    ]
    args = _podman_run(profile, name, svc) if runtime == "podman" else _apptainer_run(name, svc, notes)
    if svc.command:
        args.append(sh_words(svc.command))
    lines = [f"start_{_fn(name)}() {{"]
    if runtime == "apptainer" and svc.env:  # rewritten at each start: SPARC_RUN is the job's own
        lines.append(f"  printf '%s\\n' {_env_file(svc.env)} >\"$SPARC_RUN\"/{name}.env")
    body = " ".join([*secret_env, "exec"]) + " " + args[0]
    rest = args[1:]
    lines.append(f"  {body}" + (" \\" if rest else ""))
    for i, a in enumerate(rest):
        lines.append(f"    {a}" + (" \\" if i < len(rest) - 1 else ""))
    lines.append("}")
    return lines


# ---------------------------------------------------------------- the script


def _header(profile: Profile, o: SlurmOptions, job: _Job, source: str) -> list[str]:
    out = [
        "#!/bin/bash",
        f"#SBATCH --job-name={profile.name}",
        f"#SBATCH --partition={_word('--partition', o.partition)}",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={job.cpus}",
        f"#SBATCH --mem={slurm_mem(job.mem)}",
    ]
    if job.gpus:
        out.append(f"#SBATCH --gres=gpu:{job.gpus}")
    out += [
        f"#SBATCH --time={partitions.format_time(job.seconds)}",
        f"#SBATCH --output={_word('--log', o.output or profile.name + '_%j.log', _SLURM_PATH)}",
        # TERM to this script 60 s before the time limit, so the trap stops the services in time
        "#SBATCH --signal=B:TERM@60",
    ]
    if o.account:
        out.append(f"#SBATCH --account={_word('--account', o.account)}")
    if o.qos:
        out.append(f"#SBATCH --qos={_word('--qos', o.qos)}")
    out += [
        "# shellcheck disable=SC2016 # '$1' in bash -c '...' is the child shell's argument",
        "#",
        f"# Generated by `sparc-agent export slurm --runtime {o.runtime}` from {source_label(source)}:",
        f"# stack {profile.name}, services {', '.join(start_order(profile))} (in start order).",
        "# Services run in the background under a supervisor that applies the profile's restart policy;",
        "# each waits for its depends_on (started/healthy, by the profile's probe); `scancel` or the time",
        "# limit sends TERM and the trap stops and removes every service.",
    ]
    return out


def _runtime_setup(profile: Profile, o: SlurmOptions, notes: list[str]) -> list[str]:
    if o.runtime == "apptainer":
        out = [
            "module purge",
            "module load apptainer",
            "",
            "# SIF images: build each once, e.g. on a login node, from the profile's image:",
        ]
        for name, svc in profile.services.items():
            scheme = "docker-daemon" if svc.image.startswith("localhost/") else "docker"
            out.append(f"#   apptainer build {name}.sif {scheme}://{svc.image}")
        out += [
            "SPARC_SIF_DIR=${SPARC_SIF_DIR:-${SLURM_SUBMIT_DIR:-$PWD}/sif}",
            "SPARC_VOLUME_DIR=${SPARC_VOLUME_DIR:-${SLURM_SUBMIT_DIR:-$PWD}/volumes}",
        ]
        for name in profile.services:
            env = f"SPARC_SIF_{_fn(name).upper()}"
            out.append(f"{_var('SIF', name)}=${{{env}:-$SPARC_SIF_DIR/{name}.sif}}")
        out += [
            "runtime_running() { true; }",
            "runtime_stop() { true; } # supervisors stop their process",
            "runtime_prepare() {",
        ]
        out += [
            f'  [[ -r ${_var("SIF", n)} ]] || fail "no image ${_var("SIF", n)} for {n}"'
            for n in profile.services
        ]
        out += [f'  mkdir -p "$SPARC_VOLUME_DIR"/{sh_quote(v)}' for v in profile.volumes]
        out.append("}")
        notes.append(
            "apptainer shares the node's network: services listen on their container ports on the node"
            " itself, and pod.bind / host ports / port ranges are not enforced (the service decides)"
        )
        return out
    names = " ".join(f'"$POD-{n}"' for n in reversed(start_order(profile)))
    publish = [f"-p {sh_quote(_publish(profile, spec))}" for spec in profile.pod.ports]
    return [
        'POD="$STACK-${SLURM_JOB_ID:-$$}"',
        "# the job's GPUs (SLURM_JOB_GPUS: host indexes) as CDI devices; all of the node's without SLURM",
        "JOB_GPUS=()",
        'IFS=, read -r -a _ids <<<"${SLURM_JOB_GPUS:-}"',
        'for _id in "${_ids[@]}"; do JOB_GPUS+=("--device=nvidia.com/gpu=$_id"); done',
        "((${#JOB_GPUS[@]})) || JOB_GPUS=(--device=nvidia.com/gpu=all)",
        "runtime_running() {",
        '  [[ $(podman container inspect -f "{{.State.Running}}" "$POD-$1" 2>/dev/null) == true ]]',
        "}",
        "runtime_stop() {",
        f"  podman stop -i -t 10 {names} >/dev/null 2>&1",
        '  podman pod rm -f -i -t 0 "$POD" >/dev/null 2>&1',
        "}",
        "runtime_prepare() {",
        '  command -v podman >/dev/null || fail "podman not found on $(hostname)"',
        f'  podman pod create --replace --name "$POD" {" ".join(publish)} >/dev/null ||'
        ' fail "cannot create pod $POD"',
        "}",
    ]


def _publish(profile: Profile, spec: PortSpec) -> str:
    """podman's -p with the address always written out: pod.bind unless the entry names one."""

    def span(r: tuple[int, int]) -> str:
        return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"

    ip = host_ip(profile, spec)
    return f"{f'[{ip}]' if ':' in ip else ip}:{span(spec.host)}:{span(spec.container)}/{spec.protocol}"


def _secrets(profile: Profile) -> list[str]:
    out = []
    for name, decl in profile.secrets.items():
        var = _var("SECRET", name)
        out.append(f"{var}=")
        if decl.file is not None:
            out.append(f"read_secret_file {var} {sh_path(decl.file)}")
        else:
            out.append(f"read_secret_env {var} {decl.env}")
    return out


def _main(profile: Profile) -> list[str]:
    out = []
    for name in start_order(profile):
        svc = profile.services[name]
        for dep, condition in svc.depends_on.items():
            if condition == "completed":
                continue  # it ran to completion above, before anything after it started
            if condition == "healthy":
                h = profile.services[dep].health
                assert h is not None  # validation: `healthy` needs a probe
                out.append(f"await_healthy {dep} {h.interval:g} {h.start_period:g}")
            else:
                out.append(f"await_started {dep}")
        if svc.oneshot:  # in the foreground, once: the job fails with it
            out += [
                f'log "{name}: running (one-shot)"',
                f'(start_{_fn(name)}) || fail "{name} failed (exit $?)"',
            ]
            continue
        r = svc.restart
        out.append(
            f"launch {name} {r.policy} {r.backoff.initial:g} {r.backoff.max:g} {r.backoff.multiplier:g}"
            f" {r.max_restarts} {r.window:g}"
        )
    running = [n for n in start_order(profile) if not profile.services[n].oneshot]
    for name in running:
        h = profile.services[name].health
        out.append(
            f"await_healthy {name} {h.interval:g} {h.start_period:g}" if h else f"await_started {name}"
        )
    done = len(profile.services) - len(running)
    out += [
        f'log "all {len(running)} services healthy{f", {done} one-shots completed" if done else ""}"',
        "wait",
    ]
    return out


def warnings(profile: Profile, options: SlurmOptions) -> list[str]:
    """What the user must know before submitting: said on stderr, not only inside the script."""
    if options.runtime == "apptainer" and any(is_loopback(host_ip(profile, p)) for p in profile.pod.ports):
        return [
            "apptainer shares the node's network: the ports the profile binds to 127.0.0.1 listen on"
            " whatever address each service picks, so other users of the node may reach them"
            " (--runtime podman keeps the loopback bind)"
        ]
    return []


def export_slurm(profile: Profile, options: SlurmOptions = SlurmOptions(), source: str = "") -> str:
    o = options
    job = _job(profile, o)
    notes: list[str] = []
    services: list[str] = []
    for name in start_order(profile):
        svc = profile.services[name]
        services += _start(profile, name, svc, o.runtime, notes)
        services += _probe(profile, name, svc, o.runtime, notes)
    setup = _runtime_setup(profile, o, notes)
    notes.append("a service that stays up but fails its probe is not restarted (only exits are)")
    lines = _header(profile, o, job, source)
    lines += ["#", "# Lost in translation:", *(f"#   {n}" for n in notes), ""]
    lines += [
        "set -u",
        "umask 077",
        f"STACK={sh_quote(profile.name)}",
        f"SPARC_HEALTH_TIMEOUT=${{SPARC_HEALTH_TIMEOUT:-{HEALTH_TIMEOUT}}}",
        "declare -A SUPERVISORS=() HEALTHY=()",
        "",
        library().rstrip("\n"),
        "",
        *setup,
        "",
        *services,
        "",
        "SPARC_RUN=$(mktemp -d)",
        "trap cleanup EXIT",
        "trap 'exit 143' TERM INT # exit runs the EXIT trap: cleanup",
        'log "job ${SLURM_JOB_ID:-?} on $(hostname): stack $STACK"',
        *_secrets(profile),
        "runtime_prepare",
        *_main(profile),
        "",
    ]
    return "\n".join(lines)
