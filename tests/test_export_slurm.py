"""`sparc-agent export slurm`: golden files, shellcheck, limits, and a real single-node SLURM cluster."""

from __future__ import annotations

import os
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from support.slurmhost import SlurmCluster, slurm_cluster_fixture  # noqa: F401 - provides `slurm_cluster`
from support.testhost import (
    free_port,
    grpc_health,
    http_get,
    podman,
    require_tool,
    stun_binding,
    wait_for,
    ws_handshake,
)

from sparc_agent.cli.export import export
from sparc_agent.export.shell import sh_quote
from sparc_agent.export.slurm import SlurmOptions, export_slurm, library
from sparc_agent.profile.load import load_profile

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "export"
EXAMPLES = ["sparc-avatar", "sparc-backend", "loader"]  # loader: tests/profiles/ (a one-shot)
RUNTIMES = ["apptainer", "podman"]
AVATAR = str(ROOT / "examples" / "sparc-avatar.yaml")


def _source(example: str) -> Path:
    return ROOT / ("tests/profiles" if example == "loader" else "examples") / f"{example}.yaml"


def _export(example: str, runtime: str) -> str:
    profile = load_profile(str(_source(example))).profile
    options = SlurmOptions(runtime="podman" if runtime == "podman" else "apptainer")
    return export_slurm(profile, options, source=str(_source(example).relative_to(ROOT)))


@pytest.mark.unit
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("example", EXAMPLES)
def test_golden(example: str, runtime: str, update_golden: bool) -> None:
    text = _export(example, runtime)
    path = GOLDEN / example / f"{runtime}.slurm"
    if update_golden:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs: run pytest --update-golden and review the diff"


@pytest.mark.unit
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("example", EXAMPLES)
def test_shellcheck_clean(example: str, runtime: str, tmp_path: Path) -> None:
    require_tool("shellcheck")
    script = tmp_path / "job.slurm"
    script.write_text(_export(example, runtime))
    proc = subprocess.run(["shellcheck", "-s", "bash", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.unit
def test_the_bash_library_is_package_data_and_shellcheck_clean_on_its_own() -> None:
    require_tool("shellcheck")
    template = resources.files("sparc_agent.export").joinpath("templates", "slurm-library.sh")
    with resources.as_file(template) as path:
        proc = subprocess.run(["shellcheck", "-s", "bash", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    assert library().startswith("# ---- sparc-agent job library") and library() in _export(
        "sparc-avatar", "podman"
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    "value", ["plain", "a b", "it's", '"dq"', "$HOME", "`id`", "$(id)", "a\\b", "*", "-n", "", "tab\there"]
)
def test_sh_quote_is_literal_in_bash(value: str) -> None:
    out = subprocess.run(["bash", "-c", f"printf %s {sh_quote(value)}"], capture_output=True, text=True)
    assert out.stdout == value


@pytest.mark.unit
def test_secrets_are_read_at_job_start_never_written(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("sk-FILE-SECRET")
    doc = {
        "apiVersion": "sparc-agent/v1",
        "name": "t",
        "secrets": {"a": {"file": str(key)}, "b": {"env": "TOKEN_SRC"}},
        "services": {"web": {"image": "localhost/x:1", "secrets": {"A": "a", "B": "b"}}},
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    for runtime in RUNTIMES:
        text = export_slurm(load_profile(str(path)).profile, SlurmOptions(runtime=runtime))  # type: ignore[arg-type]
        assert "sk-FILE-SECRET" not in text
        assert f"read_secret_file SECRET_a {key}" in text and "read_secret_env SECRET_b TOKEN_SRC" in text
        prefix = "APPTAINERENV_" if runtime == "apptainer" else ""
        assert f'{prefix}A="$SECRET_a" {prefix}B="$SECRET_b" exec' in text


# apptainer's --env splits its value at commas; the env file does not. A stand-in for apptainer (not
# installable here) reads --env-file the way apptainer does, with a POSIX shell, and prints one variable.
FAKE_APPTAINER = """#!/bin/sh
while [ "$1" != --env-file ]; do shift; done
exec sh -c 'set -a; . "$1"; printf %s "$TRICKY"' _ "$2"
"""


@pytest.mark.unit
def test_apptainer_env_values_keep_commas_quotes_and_dollars(tmp_path: Path) -> None:
    value = "a,b=c d'e\"f $HOME `id` \\n,"
    doc = {
        "apiVersion": "sparc-agent/v1",
        "name": "t",
        "services": {"web": {"image": "localhost/x:1", "env": {"TRICKY": value, "PLAIN": "1"}}},
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    script = export_slurm(load_profile(str(path)).profile, SlurmOptions(runtime="apptainer"))
    start = script[script.index("start_web() {") :]
    start = start[: start.index("\n}\n") + 3]
    assert "--env " not in start  # every value goes through the file
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apptainer").write_text(FAKE_APPTAINER)
    (bin_dir / "apptainer").chmod(0o755)
    run = tmp_path / "run"
    run.mkdir()
    done = subprocess.run(
        ["bash", "-c", f"{start}\nSPARC_RUN={run} SIF_web=x start_web"],
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == value


@pytest.mark.unit
@pytest.mark.parametrize(
    ("runtime", "bind", "warned"),
    [("apptainer", None, True), ("podman", None, False), ("apptainer", "0.0.0.0", False)],
)
def test_apptainer_warns_that_the_loopback_bind_is_not_enforced(
    runtime: str, bind: str | None, warned: bool, tmp_path: Path
) -> None:
    doc: dict[str, Any] = {
        "apiVersion": "sparc-agent/v1",
        "name": "t",
        "pod": {"ports": ["8000:8000"], **({"bind": bind} if bind else {})},
        "services": {"web": {"image": "localhost/x:1"}},
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(export, ["slurm", str(path), "--runtime", runtime])
    assert result.exit_code == 0, result.output
    assert ("warning: apptainer shares the node's network" in result.stderr) is warned
    assert "warning" not in result.stdout


@pytest.mark.unit
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--time", "20-00:00:00"], "exceeds partition hpg-ai's limit of 14-00:00:00"),
        (["--partition", "hpg-default"], "partition hpg-default has no GPUs"),
        (["--gpus", "9"], "partition hpg-ai has at most 8 GPUs per node"),
        (["--time", "UNLIMITED"], "exceeds partition hpg-ai's limit"),
        (["--time", "soon"], "not a SLURM time"),
        (["--account", "a;rm -rf /"], "--account 'a;rm -rf /': not allowed"),
        (["--gpus", "0"], "--gpus 0: a service asks for 1 GPUs"),
        (["--mem", "lots"], "--mem: invalid memory size"),
    ],
)
def test_recipes_beyond_the_partition_are_refused_before_submission(args: list[str], message: str) -> None:
    result = CliRunner().invoke(export, ["slurm", AVATAR, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.unit
def test_recipe_overrides_map_onto_set_and_overlays(tmp_path: Path) -> None:
    """Seed 004's recipe defaults + per-deployment overrides are the profile + -f / --set."""
    overlay = tmp_path / "o.yaml"
    overlay.write_text("services:\n  mas:\n    env: {LOG_LEVEL: info}\n")
    runner = CliRunner()
    result = runner.invoke(
        export,
        [
            "slurm",
            AVATAR,
            "-f",
            str(overlay),
            "--set",
            "services.mas.env.LOG_LEVEL=debug",
            "--cpus",
            "32",
            "--mem",
            "256g",
            "--gpus",
            "4",
            "--account",
            "p200981",
            "--qos",
            "default",
        ],
    )
    assert result.exit_code == 0, result.output
    for line in [
        "#SBATCH --cpus-per-task=32",
        "#SBATCH --mem=256G",
        "#SBATCH --gres=gpu:4",
        "#SBATCH --account=p200981",
        "#SBATCH --qos=default",
        "LOG_LEVEL=debug",  # apptainer: a line of the service's env file
    ]:
        assert line in result.output


# ---------------------------------------------------------------- the real scheduler


def _script(tmp: Path, *args: str) -> Path:
    out = tmp / f"job{len(list(tmp.glob('job*')))}.slurm"
    result = CliRunner().invoke(
        export, ["slurm", str(ROOT / "examples" / "sparc-backend.yaml"), *args, "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.e2e
def test_sbatch_test_only_accepts_a_fitting_partition_and_rejects_one_that_does_not(
    slurm_cluster: SlurmCluster,
    tmp_path: Path,
) -> None:
    fits = _script(tmp_path, "--partition", "hpg-ai", "--time", "1-00:00:00", "--cpus", "2", "--mem", "2g")
    ok = slurm_cluster.run("sbatch", "--test-only", str(fits))
    assert ok.returncode == 0 and "to start at" in ok.stderr, ok.stderr
    # `debug` is not in the exporter's table: the scheduler itself refuses a day on a 1-hour partition
    too_long = _script(tmp_path, "--partition", "debug", "--time", "1-00:00:00", "--cpus", "2", "--mem", "2g")
    bad = slurm_cluster.run("sbatch", "--test-only", str(too_long))
    assert bad.returncode != 0
    assert "Requested time limit is invalid (missing or exceeds some limit)" in bad.stderr, bad.stderr
    too_many_gpus = _script(
        tmp_path, "--partition", "hpg-ai", "--time", "1:00:00", "--cpus", "2", "--mem", "2g", "--gpus", "4"
    )
    bad = slurm_cluster.run("sbatch", "--test-only", str(too_many_gpus))
    assert bad.returncode != 0 and "Requested node configuration is not available" in bad.stderr, bad.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_real_job_runs_the_stack_healthy_and_scancel_leaves_nothing(
    slurm_cluster: SlurmCluster,
    standin_images: dict[str, str],
    tmp_path: Path,
) -> None:
    name = f"sx-{os.urandom(3).hex()}"
    ports = {"mas": free_port(), "sig": free_port(), "riva": free_port(), "turn": free_port("udp")}
    key = tmp_path / "openai.key"
    key.write_text("sk-test-slurm\n")
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
                "secrets": {"openai-api-key": {"file": str(key)}},
                "services": {
                    "riva": {
                        "health": {"grpc": {"port": ports["riva"]}, "start_period": "20s", "interval": "1s"}
                    },
                    "mas": {"health": {"http": {"port": ports["mas"]}, "interval": "1s"}},
                    "signaling": {"health": {"websocket": {"port": ports["sig"]}, "interval": "1s"}},
                    "turn": {
                        "command": ["-n", "--listening-port=3478", "--no-cli"],
                        "volumes": [],  # the stand-in needs no secret config file
                        "health": {"stun": {"port": ports["turn"]}, "interval": "1s"},
                    },
                    "unity": {"health": {"interval": "1s"}},
                },
            }
        )
    )
    script = tmp_path / "job.slurm"
    result = CliRunner().invoke(
        export,
        [
            "slurm",
            AVATAR,
            "-f",
            str(overlay),
            "--runtime",
            "podman",
            "--partition",
            "hpg-ai",
            "--time",
            "00:10:00",
            "--cpus",
            "2",
            "--mem",
            "2g",
            "--log",
            f"{tmp_path}/job_%j.log",
            "-o",
            str(script),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "sk-test-slurm" not in script.read_text()
    sub = subprocess.run(
        ["sbatch", "--parsable", str(script)],
        env=slurm_cluster.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    job = sub.stdout.strip().split(";")[0]
    log = tmp_path / f"job_{job}.log"
    pod = f"{name}-{job}"
    try:

        def healthy() -> bool:
            text = log.read_text() if log.exists() else ""
            assert "ERROR" not in text, text
            assert slurm_cluster.job_state(job) in ("PENDING", "RUNNING", "CONFIGURING"), text
            return "all 5 services healthy" in text

        t0 = time.monotonic()
        wait_for(healthy, 90, interval=0.2, what=f"job {job} healthy")
        print(f"job {job}: healthy after {time.monotonic() - t0:.1f} s")
        assert grpc_health(ports["riva"]) == 1
        assert http_get(ports["mas"], "/health")[1] == 200
        assert ws_handshake(ports["sig"]) == (101, True)
        assert stun_binding(ports["turn"])
        env = podman("exec", f"{pod}-mas", "printenv", "OPENAI_API_KEY").stdout
        assert env == "sk-test-slurm\n\n"  # the whole file (its newline) + printenv's own newline

        t0 = time.monotonic()
        slurm_cluster.run("scancel", job, check=True)
        wait_for(lambda: slurm_cluster.job_state(job) == "", 40, interval=0.2, what=f"job {job} gone")
        print(f"job {job}: gone {time.monotonic() - t0:.1f} s after scancel")
        left = podman("ps", "-a", "--filter", f"name={pod}", "--format", "{{.Names}}").stdout.split()
        assert left == [], left
        assert podman("pod", "exists", pod, check=False).returncode == 1
        assert "stopped" in log.read_text()
    finally:
        slurm_cluster.run("scancel", job)
        podman("pod", "rm", "-f", "-i", "-t", "0", pod, check=False)
        podman("volume", "rm", "-f", f"{name}-riva-models", check=False)


@pytest.mark.unit
def test_a_failing_oneshot_fails_the_job_before_its_dependent_launches(tmp_path: Path) -> None:
    """The job script's own control flow, with the containers replaced by stubs: the one-shot runs in
    the foreground; its failure ends the job (exit 1, naming it and its status); nothing after it starts."""
    script = _export("loader", "podman")
    main = script[script.index('log "fetch-models: running (one-shot)"') : script.rindex("wait")]
    stubs = [
        'log() { echo "log: $*"; }',
        'fail() { log "ERROR: $*"; exit 1; }',
        'launch() { echo "launched $1"; }',
        "await_healthy() { :; }",
    ]
    for loader_status, expect_rc in ((3, 1), (0, 0)):
        run = tmp_path / f"main{loader_status}.sh"
        run.write_text("\n".join([*stubs, f"start_fetch_models() {{ return {loader_status}; }}", main]))
        done = subprocess.run(["bash", str(run)], capture_output=True, text=True, timeout=30)
        assert done.returncode == expect_rc, done.stdout + done.stderr
        if loader_status:
            assert "ERROR: fetch-models failed (exit 3)" in done.stdout and "launched" not in done.stdout
        else:
            assert "launched server" in done.stdout and "1 one-shots completed" in done.stdout
