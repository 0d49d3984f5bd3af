"""Naming has one home (sparc_agent/profile/names.py), and no stack can claim a unit it did not write."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from sparc_agent.apply.claims import whose
from sparc_agent.apply.plan import stack_files_on_disk
from sparc_agent.host.systemd import UnitState
from sparc_agent.profile.names import AGENT_UNIT, UNIT_DIR, Names, collisions, unit_of
from sparc_agent.render import header, is_ours, owner, render_agent_unit
from sparc_agent.state.live import Live
from sparc_agent.state.paths import StackPaths

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parent.parent / "sparc_agent"
HOME = PACKAGE / "profile" / "names.py"
# a unit suffix glued to a computed name: f"{x}.service", f"{x}-pod.service", f"{dir}/{x}.container"
_SUFFIX = re.compile(r"^(-[\w-]*)?\.(service|target|container|volume|pod)\b")
# a stack's object name built by hand: f"{profile.name}-{x}", f"{stack}-{x}"
_STACK = re.compile(r"(^|\.)(name|stack)$")


def hand_made_names(source: str) -> list[str]:
    """f-strings in `source` that build a unit, file, object or label name instead of asking Names."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.JoinedStr):
            continue
        pairs = zip(node.values, node.values[1:], strict=False)
        glued = any(
            isinstance(a, ast.FormattedValue)
            and isinstance(b, ast.Constant)
            and (_SUFFIX.match(b.value) or (_STACK.search(ast.unparse(a.value)) and b.value.startswith("-")))
            for a, b in pairs
        )
        label = any(isinstance(v, ast.Constant) and "io.sparc-agent." in v.value for v in node.values)
        if glued or label:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_scan_finds_what_it_looks_for() -> None:
    source = (
        'a = f"{stack}-{service}.service"\nb = f"{profile.name}-{x}"\nc = f"label=io.sparc-agent.stack={s}"\n'
    )
    assert len(hand_made_names(source)) == 3
    assert hand_made_names('d = f"{lo}-{hi}"\ne = f"{n} units"\n') == []


def test_every_module_names_things_through_names() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): found
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != HOME and (found := hand_made_names(path.read_text()))
    }
    assert offenders == {}


def test_names_follow_quadlets_rules() -> None:
    names = Names("s")
    assert unit_of(names.container_file("web")) == names.service_unit("web") == "s-web.service"
    assert unit_of(names.volume_file("data")) == names.volume_unit("data") == "s-data-volume.service"
    assert unit_of(names.pod_quadlet) == unit_of(names.pod_unit_file) == names.pod_unit == "s-pod.service"


@pytest.mark.parametrize(
    ("stack", "services", "volumes", "key"),
    [
        ("sparc-agent", ["web"], [], ("name",)),
        ("sparc", ["agent"], [], ("services", "agent")),
        ("default", ["web"], [], ("name",)),
        ("exit", ["web"], [], ("name",)),
        ("dbus", ["broker"], [], ("name",)),
        ("podman", ["web"], [], ("name",)),
        ("s", ["pod"], [], ("services", "pod")),
        ("s", ["data-volume"], ["data"], ("services", "data-volume")),
        ("s", ["infra"], [], ("services", "infra")),
    ],
)
def test_taken_names_are_refused_once_with_their_key(
    stack: str, services: list[str], volumes: list[str], key: tuple[str, ...]
) -> None:
    found = list(collisions(stack, services, volumes))
    assert [k for k, _ in found] == [key], found


def test_ordinary_names_are_free() -> None:
    assert list(collisions("sparc-avatar", ["mas", "riva", "urs", "signaling", "turn"], ["models"])) == []


def test_the_agent_unit_belongs_to_no_stack(tmp_path: Path) -> None:
    text = render_agent_unit()
    assert is_ours(text) and owner(text) is None
    (tmp_path / UNIT_DIR).mkdir(parents=True)
    (tmp_path / UNIT_DIR / AGENT_UNIT).write_text(text)
    # before the marker, a stack named sparc-agent counted the agent's unit among its own files
    live = Live(tmp_path, StackPaths(tmp_path / "state" / "sparc-agent"))
    assert stack_files_on_disk(live) == {}


def _state(load: str = "loaded", source: str = "", fragment: str = "") -> UnitState:
    return UnitState("s-web.service", load, "inactive", "dead", "", 0, 0, 0, "", fragment, source)


def test_whose_unit_it_is(tmp_path: Path) -> None:
    ours = tmp_path / "s-web.container"
    ours.write_text(header("s", "[Container]\n") + "[Container]\n")
    other = tmp_path / "t-web.container"
    other.write_text(header("t", "[Container]\n") + "[Container]\n")
    hand = tmp_path / "s-web.service"
    hand.write_text("[Service]\nExecStart=/bin/true\n")
    agent = tmp_path / AGENT_UNIT
    agent.write_text(render_agent_unit())

    assert whose(_state("not-found"), "s") is None  # nobody's yet
    assert whose(_state(source=str(ours), fragment="/run/gen/s-web.service"), "s") is None
    assert whose(_state(source=str(tmp_path / "gone.container")), "s") is None  # removed since the reload
    assert (
        whose(_state(fragment=str(hand)), "s") == f"it is loaded from {hand}, which sparc-agent did not write"
    )
    assert whose(_state(source=str(other)), "s") == f"it is loaded from {other}, stack t's file"
    assert whose(_state(fragment=str(agent)), "s") == f"it is loaded from {agent}, the agent's file"
    assert whose(_state("masked", fragment=str(hand)), "s") == f"it is masked ({hand})"
