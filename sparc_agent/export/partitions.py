"""Known HiPerGator partitions, and the check that refuses a job they would reject anyway.

The scheduler is the authority (`sinfo -p NAME -o '%P %l %G'` shows a partition's time limit and GPUs);
this table only lets `export slurm` say so before a job waits in a queue. Sources, per row:
the seeds (000: hpg-ai with 4 GPUs for 7-00:00:00, "a finite default to avoid scheduler rejection";
001: hpg-ai for 14-00:00:00) and UF Research Computing's public documentation for the rest. A partition
not in the table is not checked (the scheduler's own `sbatch --test-only` still is).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sparc_agent.errors import InvalidInput

UNLIMITED = -1
_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


@dataclass(frozen=True)
class Partition:
    name: str
    max_seconds: int  # UNLIMITED for no limit
    max_gpus: int  # per node; 0 = a CPU partition
    source: str


_DAY = 86400
PARTITIONS = {
    p.name: p
    for p in (
        Partition("hpg-ai", 14 * _DAY, 8, "seed 001 (14-00:00:00 on hpg-ai); DGX A100 nodes, 8 GPUs each"),
        Partition("gpu", 14 * _DAY, 8, "UF RC documentation: GPU partition, 14 days"),
        Partition("hpg-default", 31 * _DAY, 0, "UF RC documentation: 31 days (investment QOS), no GPUs"),
        Partition("bigmem", 31 * _DAY, 0, "UF RC documentation: 31 days, no GPUs"),
        Partition("hpg-dev", 12 * 3600, 0, "UF RC documentation: development partition, 12 hours, no GPUs"),
    )
}


def parse_time(text: str) -> int:
    """A SLURM time limit -> seconds: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, or UNLIMITED/INFINITE."""
    value = text.strip()
    if value.upper() in ("UNLIMITED", "INFINITE"):
        return UNLIMITED
    m = _TIME.fullmatch(value)
    if not m:
        raise InvalidInput(
            f"--time {text!r}: not a SLURM time (allowed: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS)"
        )
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if days is None:  # M, M:S, H:M:S
        h, mi, s = (0, a, b or 0) if c is None else (a, b, c)
    else:  # D-H, D-H:M, D-H:M:S
        h, mi, s = a, b or 0, c or 0
    return (days or 0) * _DAY + (h or 0) * 3600 + (mi or 0) * 60 + (s or 0)


def format_time(seconds: int) -> str:
    if seconds == UNLIMITED:
        return "UNLIMITED"
    days, rest = divmod(seconds, _DAY)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{days}-{h:02d}:{m:02d}:{s:02d}"


def check(partition: str, seconds: int, gpus: int) -> Partition | None:
    """Raise InvalidInput when a known partition cannot run the job; None when the partition is unknown."""
    known = PARTITIONS.get(partition)
    if known is None:
        return None
    if known.max_seconds != UNLIMITED and (seconds == UNLIMITED or seconds > known.max_seconds):
        raise InvalidInput(
            f"--time {format_time(seconds)} exceeds partition {partition}'s limit of"
            f" {format_time(known.max_seconds)} (source: {known.source}); ask for less time"
        )
    if gpus > known.max_gpus:
        what = "has no GPUs" if known.max_gpus == 0 else f"has at most {known.max_gpus} GPUs per node"
        raise InvalidInput(
            f"{gpus} GPUs requested but partition {partition} {what} (source: {known.source});"
            " choose another --partition or fewer --gpus"
        )
    return known
