"""apply's start step, against a fake manager: which start jobs it issues, in what order.

The real order (systemd, podman, probes) is exercised by tests/test_apply_e2e.py; this pins down the rule
that the head of the longest chain of dependents starts before services nothing waits long on."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from sparc_agent.apply.start import StartStep, chain_lengths
from sparc_agent.host.systemd import UnitState
from sparc_agent.profile.load import load_profile

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sparc-avatar.yaml"


def test_chain_lengths_of_the_avatar_stack() -> None:
    # riva <- mas (healthy) <- unity (started); signaling, turn <- unity (healthy)
    profile = load_profile(str(EXAMPLE)).profile
    assert chain_lengths(profile) == {"riva": 2, "mas": 1, "signaling": 1, "turn": 1, "unity": 0}


class FakeManager:
    """Every unit inactive; a start job takes a few loop turns; what happened is logged in order."""

    def __init__(self) -> None:
        self.log: list[str] = []

    async def unit_state(self, unit: str) -> UnitState:
        return UnitState(unit, "loaded", "inactive", "dead", "success", 0, 0, 0, "", "", "")

    async def start(self, unit: str) -> None:
        self.log.append(f"start {unit}")
        await asyncio.sleep(0.01)
        self.log.append(f"done {unit}")


def test_the_longest_chain_starts_first_and_the_rest_after_its_start_job(tmp_path: Path) -> None:
    doc = tmp_path / "p.yaml"
    doc.write_text(
        "apiVersion: sparc-agent/v1\nname: s\nservices:\n"
        "  leaf: {image: localhost/x:1}\n"
        "  head: {image: localhost/x:1}\n"
        "  mid: {image: localhost/x:1, depends_on: {head: started}}\n"
        "  top: {image: localhost/x:1, depends_on: {mid: started, leaf: started}}\n"
    )
    profile = load_profile(str(doc)).profile
    mgr = FakeManager()

    async def run() -> None:
        outcomes = await StartStep(mgr, profile, set(), io.StringIO()).run()  # type: ignore[arg-type]
        assert {n: o.action for n, o in outcomes.items()} == dict.fromkeys(profile.services, "started")

    asyncio.run(run())
    assert mgr.log.index("start s-leaf.service") > mgr.log.index("done s-head.service")
    assert mgr.log.index("start s-mid.service") > mgr.log.index("done s-head.service")
    assert mgr.log.index("start s-top.service") > mgr.log.index("done s-mid.service")
    assert mgr.log[0] == "start s-head.service"
