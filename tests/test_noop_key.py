"""The fast path's key covers every input of validation and rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparc_agent.apply.noop import input_key

pytestmark = pytest.mark.unit


def test_key_changes_with_every_input(tmp_path: Path) -> None:
    base, overlay = tmp_path / "p.yaml", tmp_path / "o.yaml"
    base.write_text("name: a\n")
    overlay.write_text("name: b\n")
    keys = {
        input_key(str(base), [], []),
        input_key(str(base), [str(overlay)], []),
        input_key(str(base), [], ["name=c"]),
        input_key(str(base), [], ["name=d"]),
    }
    assert len(keys) == 4 and None not in keys
    assert input_key(str(base), [], []) == input_key(str(base), [], [])
    base.write_text("name: a \n")  # a byte differs: the key does, even if the meaning would not
    assert input_key(str(base), [], []) not in keys


def test_unreadable_profile_has_no_key(tmp_path: Path) -> None:
    assert input_key(str(tmp_path / "missing.yaml"), [], []) is None
