"""The generation switch (state.live) killed after every single filesystem step: a reader (quadlet +
systemd, tests/support/reader.py) sees the old set or the new set, never a mix, and finishing the
switch (what the next apply does) reaches the new set with no dangling link and no leftover copy.

The kill is simulated: each os.symlink/os.replace/unlink/rmtree/write counts as one step, and the
step after the Nth raises. Nothing after the raise runs, as after a SIGKILL (live.py catches nothing).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.reader import dangling, reader_view

from sparc_agent.apply.plan import file_changes, flat_files, stack_files_on_disk
from sparc_agent.apply.write import write as write_files
from sparc_agent.render import header
from sparc_agent.state import files as state_files
from sparc_agent.state import live as live_module
from sparc_agent.state.generations import Store
from sparc_agent.state.live import ADOPTED, LinkTaken, Live
from sparc_agent.state.paths import StackPaths

STACK = "s"


class Killed(BaseException):
    """Stands for SIGKILL: nothing in state.live catches it."""


def unit(body: str) -> str:
    return header(STACK, body) + body


GEN1 = {
    "containers/systemd/s-web.container": unit("[Container]\nImage=web:1\n"),
    "containers/systemd/s-db.container": unit("[Container]\nImage=db:1\n"),
    "systemd/user/s.target": unit("[Unit]\nDescription=one\n"),
    "systemd/user/s-cache-volume.service": unit("[Service]\nExecStart=/bin/true\n"),
}
GEN2 = {
    "containers/systemd/s-web.container": unit("[Container]\nImage=web:2\n"),  # changed
    "containers/systemd/s-db.container": GEN1["containers/systemd/s-db.container"],  # same
    "containers/systemd/s-new.container": unit("[Container]\nImage=new:1\n"),  # added
    "systemd/user/s.target": unit("[Unit]\nDescription=two\n"),  # changed
    "systemd/user/s-logs-volume.service": unit("[Service]\nExecStart=/bin/false\n"),  # added
}  # s-cache-volume.service removed


def generation(root: Path, number: int, files: dict[str, str]) -> Path:
    directory = root / "generations" / f"{number:06d}" / "files"
    for rel, text in files.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_text(text)
    return directory


@pytest.fixture
def live(tmp_path: Path) -> Live:
    state = StackPaths(tmp_path / "state" / STACK)
    state.root.mkdir(parents=True)
    return Live(tmp_path / "cfg", state)


def write(live: Live, files: Path) -> None:
    """What apply.write does in the linked layout."""
    live.adopt(flat_files(live.config_home, STACK))
    live.switch(files)


def kill_after(monkeypatch: pytest.MonkeyPatch, steps: int | None) -> list[int]:
    """Count (and after `steps` of them, kill at) every filesystem step state.live takes."""
    done = [0]

    def counted(fn: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any, **kwargs: Any) -> Any:
            if steps is not None and done[0] >= steps:
                raise Killed
            done[0] += 1
            return fn(*args, **kwargs)

        return step

    monkeypatch.setattr(live_module.os, "symlink", counted(os.symlink))
    monkeypatch.setattr(live_module.os, "replace", counted(os.replace))
    monkeypatch.setattr(live_module.shutil, "rmtree", counted(shutil.rmtree))
    monkeypatch.setattr(live_module, "write_atomic", counted(state_files.write_atomic))
    monkeypatch.setattr(Path, "unlink", counted(Path.unlink))
    return done


def put_flat(live: Live, files: dict[str, str]) -> None:
    """An old-layout stack: its files as regular files in the unit directories."""
    for rel, text in files.items():
        (live.config_home / rel).parent.mkdir(parents=True, exist_ok=True)
        (live.config_home / rel).write_text(text)


Setup = Callable[[Live], Callable[[], None]]  # prepares the disk, returns the action to kill


def first(live: Live) -> Callable[[], None]:
    gen1 = generation(live.state.root, 1, GEN1)
    return lambda: write(live, gen1)


def update(live: Live) -> Callable[[], None]:
    write(live, generation(live.state.root, 1, GEN1))
    gen2 = generation(live.state.root, 2, GEN2)
    return lambda: write(live, gen2)


def back(live: Live) -> Callable[[], None]:
    gen1 = generation(live.state.root, 1, GEN1)
    write(live, gen1)
    write(live, generation(live.state.root, 2, GEN2))
    return lambda: write(live, gen1)


def adopt(live: Live) -> Callable[[], None]:
    put_flat(live, GEN1)
    gen2 = generation(live.state.root, 2, GEN2)
    return lambda: write(live, gen2)


def remove(live: Live) -> Callable[[], None]:
    write(live, generation(live.state.root, 1, GEN1))
    return live.remove


SCENARIOS: dict[str, tuple[Setup, dict[str, str], dict[str, str]]] = {
    "first apply": (first, {}, GEN1),
    "new generation": (update, GEN1, GEN2),
    "back to an older one": (back, GEN2, GEN1),
    "old flat layout to a new generation": (adopt, GEN1, GEN2),
    "remove the stack": (remove, GEN1, {}),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_killed_after_any_step_a_reader_sees_old_or_new_and_the_next_run_finishes(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup, old, new = SCENARIOS[name]

    def fresh(label: str) -> Live:
        state = StackPaths(tmp_path / label / "state" / STACK)
        state.root.mkdir(parents=True)
        return Live(tmp_path / label / "cfg", state)

    whole = fresh("whole")
    action = setup(whole)
    steps = kill_after(monkeypatch, None)
    action()
    monkeypatch.undo()
    total = steps[0]
    assert reader_view(whole.config_home, STACK) == new and total > 2
    seen = []
    for n in range(total):
        live = fresh(str(n))
        action = setup(live)
        kill_after(monkeypatch, n)
        with pytest.raises(Killed):
            action()
        monkeypatch.undo()
        view = reader_view(live.config_home, STACK)
        assert view in (old, new), f"killed after step {n} of {total}: a mix: {sorted(view)}"
        seen.append("old" if view == old else "new")
        action()  # the next apply finishes the switch
        assert reader_view(live.config_home, STACK) == new, f"after step {n}"
        assert dangling(live.config_home) == [], f"after step {n}"
        assert not list(live.state.root.glob(f"{ADOPTED}*")), f"after step {n}"
        if new:
            assert stack_files_on_disk(live) == new
    # one switch: a kill before it leaves the old set, after it the new one, never back and forth
    assert seen[0] == "old" and seen == sorted(seen, key=("old", "new").index), seen


def test_links_only_name_the_live_directory(live: Live) -> None:
    """No link names a generation: the one rename is the whole switch."""
    write(live, generation(live.state.root, 1, GEN1))
    assert os.readlink(live.quadlet_link) == str(live.state.live / "containers/systemd")
    for name in ("s.target", "s-cache-volume.service"):
        assert os.readlink(live.config_home / "systemd/user" / name) == str(
            live.state.live / "systemd/user" / name
        )
    assert live.state.live_number() == 1
    assert flat_files(live.config_home, STACK) == {}


def test_a_users_directory_in_the_links_place_is_refused(live: Live) -> None:
    live.quadlet_link.mkdir(parents=True)
    (live.quadlet_link / "mine.container").write_text("[Container]\nImage=mine\n")
    with pytest.raises(LinkTaken, match="sparc-agent-s exists"):
        write(live, generation(live.state.root, 1, GEN1))
    assert (live.quadlet_link / "mine.container").is_file()


def test_an_unchanged_adopted_file_becomes_a_link_without_changing_its_bytes(live: Live) -> None:
    put_flat(live, GEN1)
    write(live, generation(live.state.root, 1, GEN1))
    assert reader_view(live.config_home, STACK) == GEN1
    assert (live.config_home / "systemd/user/s.target").is_symlink()
    assert not (live.config_home / "containers/systemd/s-web.container").exists()  # behind the link now


def test_pruning_never_removes_the_generation_live_names(tmp_path: Path) -> None:
    """`live` may name an older generation than `current` (a kill between the switch and the record);
    pruning (10 kept) must not pull the files from under systemd."""
    v0 = Path(__file__).parent / "fixtures" / "state-v0" / "th-ce58d6"
    store = Store(StackPaths(tmp_path / "state" / "th-ce58d6"))
    shutil.copytree(v0, store.root, symlinks=True)
    for number in range(2, 14):
        shutil.copytree(store.generations / "000001", store.generations / f"{number:06d}")
    Live(tmp_path / "cfg", store.paths).switch(store.generations / "000001" / "files")
    newest = store.all()[-1]
    store.set_current(newest)
    assert [g.number for g in store.all()] == [1, *range(4, 14)]  # 2 and 3 pruned, 1 is live
    assert store.paths.live_number() == 1
    assert reader_view(tmp_path / "cfg", "th-ce58d6")  # still readable through the links


def test_a_quadlet_below_5_3_gets_flat_files_again_and_no_link(tmp_path: Path) -> None:
    """A host whose podman went back below 5.3 (its quadlet no longer follows the link)."""
    v0 = Path(__file__).parent / "fixtures" / "state-v0" / "th-ce58d6"
    store = Store(StackPaths(tmp_path / "state" / "th-ce58d6"))
    shutil.copytree(v0, store.root, symlinks=True)
    generation = store.current()
    assert generation is not None
    linked = Live(tmp_path / "cfg", store.paths)
    linked.switch(generation.files_dir)
    flat = Live(tmp_path / "cfg", store.paths, linked=False)
    assert write_files(flat, generation, file_changes(flat, generation.files))
    assert [p for p in (tmp_path / "cfg").rglob("*") if p.is_symlink()] == []
    assert (
        flat_files(tmp_path / "cfg", "th-ce58d6")
        == generation.files
        == reader_view(tmp_path / "cfg", "th-ce58d6")
    )
    assert not store.paths.live.exists() and not store.paths.empty.exists()
