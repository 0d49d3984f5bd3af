"""apply killed with SIGKILL at random moments (writing, reloading, pulling, starting, waiting), each time
followed by a plain re-apply: the re-apply always converges to the wanted generation (exit 0, no
rollback, the changed service runs the new configuration), and nothing that did not change restarts.
After EVERY kill, what a daemon-reload would load of the stack (tests/support/reader.py: quadlet's view
through the stack's link, systemd's through its unit links) is exactly the old set or the new set, never
a mix (state.live: one rename), and no link dangles where quadlet reads.

Prints the counts for the record: `kill loop: tried=N converged=C ...`. SPARC_KILL_TRIES sets N (50).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support.reader import dangling, reader_view
from support.stackfiles import SPARC_AGENT, avatar_profile, sparc, unit_props, write_profile
from support.testhost import UserManager, podman

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STEADY = ("riva", "mas", "turn")  # never change: must never restart


def generations(mgr: UserManager, tmp: Path, bb: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A: four services (no unity). B: signaling's env changed and one service added."""
    a = avatar_profile(mgr, tmp)
    del a["services"]["unity"]
    b = {**a, "services": {k: {**v} for k, v in a["services"].items()}}
    b["services"]["signaling"]["env"] = {**a["services"]["signaling"]["env"], "GENERATION": "B"}
    b["services"]["extra"] = {"image": bb, "command": ["sleep", "100000"]}
    return a, b


def stack_files(mgr: UserManager) -> dict[str, str]:
    return reader_view(mgr.config_dir, mgr.name)


def running_generation(mgr: UserManager) -> str:
    env = podman("inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", f"{mgr.name}-signaling")
    return "B" if "GENERATION=B" in env.stdout else "A"


def phase(err: str, disk_changed: bool) -> str:
    if any(w in err for w in ("restarted ", "started ", "healthy after", "recreating")):
        return "start/wait"
    if "stopping " in err or disk_changed:
        return "write/reload"
    return "render/pull/secrets"


def test_sigkill_at_random_points_then_reapply_converges(
    user_manager: UserManager, standin_images: dict[str, str], tmp_path: Path
) -> None:
    mgr = user_manager
    tries = int(os.environ.get("SPARC_KILL_TRIES", "50"))
    rng = random.Random(int(os.environ.get("SPARC_KILL_SEED", str(time.time_ns()))))
    doc_a, doc_b = generations(mgr, tmp_path, standin_images["bb"])
    paths = {"A": write_profile(doc_a, tmp_path / "a.yaml"), "B": write_profile(doc_b, tmp_path / "b.yaml")}
    snapshots: dict[str, dict[str, str]] = {}
    durations = []
    for gen in ("A", "B"):
        t0 = time.monotonic()
        done = sparc(mgr, "apply", str(paths[gen]))
        durations.append(time.monotonic() - t0)
        assert done.returncode == 0, done.stdout + done.stderr
        snapshots[gen] = stack_files(mgr)
    assert snapshots["A"] != snapshots["B"]
    steady = {s: unit_props(mgr, f"{mgr.name}-{s}.service")["MainPID"] for s in STEADY}
    window = max(durations) * 1.2
    counts: Counter[str] = Counter()
    wanted = "B"
    for i in range(tries):
        old, wanted = wanted, "A" if wanted == "B" else "B"
        proc = subprocess.Popen(
            [*SPARC_AGENT, "apply", str(paths[wanted])],
            env=mgr.environ(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            proc.wait(timeout=rng.uniform(0.05, window))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        killed = proc.returncode == -signal.SIGKILL
        counts["killed" if killed else "finished_first"] += 1
        disk = stack_files(mgr)
        mixed = {
            rel for rel in set(disk) | set(snapshots[wanted]) if disk.get(rel) != snapshots[old].get(rel)
        }
        assert disk in (snapshots[old], snapshots[wanted]), f"try {i}: a reader sees a mix: {sorted(mixed)}"
        assert not [d for d in dangling(mgr.config_dir) if d.startswith("containers/")], f"try {i}"
        counts["saw_old" if disk == snapshots[old] else "saw_new"] += 1
        if killed:
            counts[f"phase {phase(err, disk != snapshots[old])}"] += 1
        again = sparc(mgr, "apply", str(paths[wanted]))
        out = again.stdout + again.stderr
        assert again.returncode == 0, f"try {i} (killed={killed}): {out}"
        assert "rolled back" not in out and "back to generation" not in out, out
        assert stack_files(mgr) == snapshots[wanted], f"try {i}"
        assert dangling(mgr.config_dir) == [], f"try {i}"
        assert running_generation(mgr) == wanted, f"try {i}: signaling runs {running_generation(mgr)}: {out}"
        extra = unit_props(mgr, f"{mgr.name}-extra.service")["ActiveState"]
        assert extra == ("active" if wanted == "B" else "inactive"), f"try {i}: extra is {extra}"
        now = {s: unit_props(mgr, f"{mgr.name}-{s}.service")["MainPID"] for s in STEADY}
        assert now == steady, f"try {i}: an unchanged service restarted: {steady} -> {now}"
        counts["converged"] += 1
    print(
        f"kill loop: tried={tries} converged={counts['converged']} killed={counts['killed']}"
        f" finished_before_kill={counts['finished_first']} reader_saw_old={counts['saw_old']}"
        f" reader_saw_new={counts['saw_new']}"
        + "".join(
            f" {k.replace('phase ', '')}={v}" for k, v in sorted(counts.items()) if k.startswith("phase")
        )
    )
