"""What apply asks the host while the profile validates (images), and when it trusts that answer."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from pathlib import Path

import pytest

from sparc_agent.apply import run
from sparc_agent.apply.run import EarlyImages, images_early, missing_images

pytestmark = pytest.mark.unit


def done(value: EarlyImages | None) -> Future[EarlyImages | None]:
    future: Future[EarlyImages | None] = Future()
    future.set_result(value)
    return future


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """podman's answers: every image named "gone..." is missing; the questions are recorded."""
    questions: list[list[str]] = []

    def fake(images: object) -> list[str]:
        questions.append(list(images))  # type: ignore[call-overload]
        return [i for i in questions[-1] if i.startswith("gone")]

    monkeypatch.setattr(run.podman, "missing_images", fake)
    return questions


def test_images_early_reads_the_profile_and_its_overlays(tmp_path: Path, asked: list[list[str]]) -> None:
    base, top = tmp_path / "p.yaml", tmp_path / "o.yaml"
    base.write_text("services:\n  a: {image: 'x:1'}\n  b: {image: 'gone:1'}\n")
    top.write_text("services:\n  b: {image: 'y:2'}\n  c: {image: 'z:3'}\n")
    assert images_early(str(base), [str(top)]) == EarlyImages(frozenset({"x:1", "y:2", "z:3"}), [])
    assert images_early(str(base), []) == EarlyImages(frozenset({"x:1", "gone:1"}), ["gone:1"])
    (tmp_path / "bad.yaml").write_text("- a list\n")
    assert images_early(str(tmp_path / "bad.yaml"), []) is None  # validation says what is wrong


def test_an_early_all_present_answer_for_the_same_images_is_used(asked: list[list[str]]) -> None:
    early = done(EarlyImages(frozenset({"x:1", "y:2"}), []))
    assert asyncio.run(missing_images(["x:1", "y:2", "x:1"], early)) == []
    assert asyncio.run(missing_images(["x:1", "y:2"], None)) == [] and asked == [["x:1", "y:2"]]


def test_podman_is_asked_again_for_other_images_or_a_missing_one(asked: list[list[str]]) -> None:
    # --set changed an image: the early answer was about others
    other = done(EarlyImages(frozenset({"x:1"}), []))
    assert asyncio.run(missing_images(["x:1", "gone:2"], other)) == ["gone:2"]
    # missing early: maybe an apply we waited for pulled it since; asked again under the lock
    missing = done(EarlyImages(frozenset({"gone:1"}), ["gone:1"]))
    assert asyncio.run(missing_images(["gone:1"], missing)) == ["gone:1"]
    assert asked == [["x:1", "gone:2"], ["gone:1"]]
    assert asyncio.run(missing_images(["x:1"], done(None))) == []  # the files did not read plainly
