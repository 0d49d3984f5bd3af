"""A real single-node SLURM cluster for tests (recipe: /work/shared/test-host-slurm.md).

munged, slurmctld and slurmd from Debian, each in the foreground of its own process, on free ports and
in a private directory; stopped by their recorded PIDs. Import the fixture into a test module:
``from slurmhost import slurm_cluster_fixture``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.testhost import free_port, unavailable, wait_for

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "scancel", "squeue")

SLURM_CONF = """\
ClusterName=sparctest
SlurmctldHost=localhost
SlurmUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthInfo=socket={dir}/munge.sock
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
EnforcePartLimits=ALL
GresTypes=gpu
KillWait=30
NodeName=localhost CPUs=2 RealMemory=8000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=01:00:00 State=UP
PartitionName=hpg-ai Nodes=localhost MaxTime=14-00:00:00 State=UP
"""


def slurm_problems() -> list[str]:
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    problems = [f"{', '.join(missing)} not installed (scripts/test-host-setup.sh)"] if missing else []
    if os.geteuid() != 0:
        problems.append("not root (slurmd runs jobs as root here)")
    return problems


@dataclass
class SlurmCluster:
    dir: Path
    env: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, *argv: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), env=self.env, capture_output=True, text=True, check=check, timeout=timeout
        )

    def job_state(self, job: str) -> str:
        """squeue's state, or "" once the job has left the queue."""
        return self.run("squeue", "-h", "-j", job, "-o", "%T").stdout.strip()

    def log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / name).read_text(errors="replace")[-4000:]
        return ""


def _spawn(cluster: SlurmCluster, name: str, argv: list[str]) -> None:
    out = open(cluster.dir / f"{name}.out", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        argv,
        env=cluster.env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out.close()
    cluster.procs.append(proc)
    cluster.pids[name] = proc.pid


def _stop(cluster: SlurmCluster) -> None:
    for proc in reversed(cluster.procs):  # slurmd, slurmctld, munged
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextlib.contextmanager
def running_cluster() -> Iterator[SlurmCluster]:
    d = Path(tempfile.mkdtemp(prefix="sparc-slurm-", dir="/tmp"))
    d.chmod(0o755)  # munged: "execute permissions for all required" on its socket directory
    env = {**os.environ, "SLURM_CONF": str(d / "slurm.conf")}
    cluster = SlurmCluster(d, env)
    try:
        for sub in ("state", "spool"):
            (d / sub).mkdir()
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for i in range(2):  # fake GPUs: clones of /dev/null
            os.mknod(d / f"nvidia{i}", 0o666 | 0o020000, os.makedev(1, 3))
        (d / "gres.conf").write_text(f"Name=gpu File={d}/nvidia[0-1]\n")
        conf = SLURM_CONF.format(dir=d, ctld_port=free_port(), slurmd_port=free_port())
        (d / "slurm.conf").write_text(conf)
        _spawn(
            cluster,
            "munged",
            [
                "munged",
                "-F",
                "--key-file",
                str(key),
                "--socket",
                str(d / "munge.sock"),
                "--pid-file",
                str(d / "munged.pid"),
                "--seed-file",
                str(d / "munge.seed"),
                "--log-file",
                str(d / "munged.log"),
            ],
        )
        wait_for(lambda: (d / "munge.sock").exists(), 10, what="munged socket")
        _spawn(cluster, "slurmctld", ["slurmctld", "-D", "-c", "-f", str(d / "slurm.conf")])
        _spawn(cluster, "slurmd", ["slurmd", "-D", "-N", "localhost", "-f", str(d / "slurm.conf")])

        def idle() -> bool:
            return "idle" in cluster.run("sinfo", "-h", "-n", "localhost", "-o", "%T").stdout

        try:
            wait_for(idle, 30, interval=0.2, what="slurm node idle")
        except TimeoutError as exc:
            raise RuntimeError(
                f"{exc}\n{cluster.log('slurmctld.log')}\n{cluster.log('slurmd.log')}"
            ) from None
        yield cluster
    finally:
        # jobs first (their traps stop their containers), then the daemons by PID
        if cluster.pids.get("slurmctld"):
            cluster.run("scancel", "--full", "-u", "root")
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and cluster.run("squeue", "-h").stdout.strip():
                time.sleep(0.2)
        _stop(cluster)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module", name="slurm_cluster")
def slurm_cluster_fixture() -> Iterator[SlurmCluster]:
    problems = slurm_problems()
    if problems:
        unavailable("SLURM test cluster not available: " + "; ".join(problems))
    with running_cluster() as cluster:
        yield cluster
