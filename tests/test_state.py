"""state/: typed, versioned generation records; today's v0 layout (tests/fixtures/state-v0, written by
the code before schemas existed) is read and migrated without losing a field."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from sparc_agent.state.generations import Store
from sparc_agent.state.meta import SCHEMA, StateProblem, Status, read_meta, schema_on_disk
from sparc_agent.state.paths import Paths

pytestmark = pytest.mark.unit

V0 = Path(__file__).parent / "fixtures" / "state-v0" / "th-ce58d6"


@pytest.fixture
def v0_stack(tmp_path: Path) -> Store:
    paths = Paths(tmp_path / "cfg", tmp_path / "state")
    shutil.copytree(V0, paths.stack_state("th-ce58d6"), symlinks=True)
    return Store(paths.stack("th-ce58d6"))


def test_v0_record_reads_as_the_current_schema(v0_stack: Store) -> None:
    raw = json.loads((V0 / "generations" / "000001" / "meta.json").read_text())
    assert "schema" not in raw  # the fixture really is the old format
    current = v0_stack.current()
    assert current is not None and current.number == 1
    meta = current.meta
    assert meta.schema == SCHEMA and meta.render_key is None  # never trusted by the fast path
    assert meta.status is Status.HEALTHY and meta.number == raw["number"]
    assert dict(meta.files) == raw["files"] and dict(meta.secrets) == raw["secrets"]
    assert [s.unit for s in meta.plan.services] == [s["unit"] for s in raw["plan"]["services"]]
    assert meta.plan.services[1].depends_on == {"riva": "healthy"}
    assert (
        meta.plan.secret_sources["openai-api-key"].file
        == raw["plan"]["secret_sources"]["openai-api-key"]["file"]
    )
    assert meta.target is not None and meta.target.podman == raw["target"]["podman"]
    assert meta.input_key == raw["input_key"] and meta.digest == raw["digest"]
    assert set(current.files) == set(raw["files"])  # the rendered files are still there


def test_migrate_rewrites_the_record_once_and_keeps_everything(v0_stack: Store) -> None:
    directory = v0_stack.generations / "000001"
    before = read_meta(directory)
    assert schema_on_disk(directory) == 0
    assert v0_stack.migrate() == [1]
    assert schema_on_disk(directory) == SCHEMA
    assert read_meta(directory) == before
    assert stat.S_IMODE((directory / "meta.json").stat().st_mode) == 0o600
    assert v0_stack.migrate() == []  # nothing left to do


def test_a_newer_schema_is_refused_not_guessed(v0_stack: Store) -> None:
    path = v0_stack.generations / "000001" / "meta.json"
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "schema": SCHEMA + 1}))
    with pytest.raises(StateProblem, match="newer sparc-agent"):
        v0_stack.current()


def test_a_corrupt_record_names_its_file(v0_stack: Store) -> None:
    path = v0_stack.generations / "000001" / "meta.json"
    path.write_text('{"number": 1}')
    with pytest.raises(StateProblem, match=str(path)):
        v0_stack.current()


def test_status_round_trips(v0_stack: Store) -> None:
    current = v0_stack.current()
    assert current is not None
    failed = v0_stack.set_status(current, Status.FAILED, "mas", "probe failing")
    again = v0_stack.current()
    assert again is not None and again.meta == failed.meta
    assert (again.meta.status, again.meta.failed, again.meta.reason) == (
        Status.FAILED,
        "mas",
        "probe failing",
    )


def test_inputs_count_from_the_reload_that_loaded_them(tmp_path: Path) -> None:
    from sparc_agent.state.inputs import Inputs

    path = tmp_path / "inputs.json"
    first = Inputs.read(path)
    assert not first.kept and first.mismatched({"a": "1"}) == []  # no record: trusted, as before
    first.put("key", "f1", None)
    first.write(path)
    assert not Inputs.read(path).kept  # a secret's record does not make the files' one
    upgraded = Inputs.read(path)
    upgraded.loaded({"a": "1", "b": "2"}, None)  # no reload: what runs predates the record
    upgraded.write(path)
    again = Inputs.read(path)
    assert again.kept and again.since({"files": ["a", "b"], "secrets": ["key"]}) == 0
    assert again.mismatched({"a": "1", "b": "3"}) == ["b"]  # written by a killed apply, never loaded
    again.loaded({"a": "1", "b": "3"}, 500)
    again.put("key", "f2", 700)
    assert again.since({"files": ["a"]}) == 0 and again.since({"files": ["b"]}) == 500
    assert again.since({"files": ["a"], "secrets": ["key"]}) == 700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
