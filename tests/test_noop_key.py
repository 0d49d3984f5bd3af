"""The fast path's key covers every input of validation and rendering, the rendering code included."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sparc_agent.apply import fastpath
from sparc_agent.apply.fastpath import PACKAGE, input_key, render_key

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


def _copy_render_code(dest: Path) -> Path:
    for sub in fastpath.RENDER_CODE:
        if (PACKAGE / sub).is_dir():
            shutil.copytree(PACKAGE / sub, dest / sub, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(PACKAGE / sub, dest / sub)
    return dest


def test_a_changed_template_byte_changes_the_key(tmp_path: Path) -> None:
    """An upgrade that keeps __version__ but renders differently must not hit the fast path."""
    package = _copy_render_code(tmp_path / "pkg")
    before = render_key(package)
    assert before == render_key(_copy_render_code(tmp_path / "same"))  # a copy: the same key
    template = sorted((package / "render" / "templates").rglob("*.j2"))[0]
    data = template.read_bytes()
    template.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    render_key.cache_clear()
    assert render_key(package) != before
    code = package / "profile" / "model.py"
    template.write_bytes(data)
    code.write_bytes(code.read_bytes() + b"\n")
    render_key.cache_clear()
    assert render_key(package) != before  # validation code counts too: its defaults shape the files


def test_input_key_follows_the_render_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("name: a\n")
    before = input_key(str(profile), [], [])
    monkeypatch.setattr(fastpath, "render_key", lambda: "another renderer")
    assert input_key(str(profile), [], []) != before
