"""After a GPU service is up, its real GPU memory (NVML, by its unit's cgroup) against its budget.

The SPARC services share one GPU; the deploy guide's rule is "start in order and check nvidia-smi after
each". This is that check: over budget is a warning, or a failure when the profile says
`gpu.enforce: true` (then apply treats the service as not healthy and rolls back).
"""

from __future__ import annotations

from typing import TextIO

from sparc_agent.host.gpu import UNATTRIBUTED, GpuUnavailable, gib, sample_by_unit
from sparc_agent.profile.model import Profile
from sparc_agent.profile.rules import gpu_budget_of


def check(profile: Profile, name: str, unit: str, log: TextIO) -> tuple[bool, str]:
    """(acceptable, why not); prints what it found."""
    budget = gpu_budget_of(profile, name)
    if budget is None:
        return True, ""
    try:
        by_unit = sample_by_unit()
    except GpuUnavailable as exc:
        print(f"warning: {name}: GPU memory not checked against its budget: {exc}", file=log, flush=True)
        return True, ""
    used, lost = by_unit.get(unit, 0), by_unit.get(UNATTRIBUTED, 0)
    if used == 0 and lost:
        print(
            f"warning: {name}: GPU memory not checked against its budget: {gib(lost)} is held by processes"
            " in no unit's cgroup (cannot tell whose)",
            file=log,
            flush=True,
        )
        return True, ""
    if used <= budget:
        print(f"{name} holds {gib(used)} of its {gib(budget)} GPU memory budget", file=log, flush=True)
        return True, ""
    problem = f"{name} holds {gib(used)} of GPU memory, over its budget of {gib(budget)}"
    problem += " (resources.gpu_memory)"
    if profile.gpu.enforce:
        return False, f"{problem}; the profile enforces budgets (gpu.enforce: true)"
    print(f"warning: {problem}", file=log, flush=True)
    return True, ""
