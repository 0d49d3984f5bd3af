"""The examples render to exactly the reviewed files. `pytest --update-golden` rewrites them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparc_agent.profile.load import load_profile
from sparc_agent.render import Target, is_ours, render, render_agent_unit

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
EXAMPLES = ["sparc-avatar", "sparc-backend"]
# profiles for what no example uses (a one-shot loader): tests/profiles/NAME.yaml
TEST_PROFILES = ["loader"]
PODMAN = ["4.4", "5.4"]


def profile_path(example: str) -> Path:
    if example in TEST_PROFILES:
        return ROOT / "tests" / "profiles" / f"{example}.yaml"
    return ROOT / "examples" / f"{example}.yaml"


def _rendered(example: str, podman: str) -> dict[str, str]:
    profile = load_profile(str(profile_path(example))).profile
    return render(profile, Target.for_podman(podman))


@pytest.mark.parametrize("podman", PODMAN)
@pytest.mark.parametrize("example", EXAMPLES + TEST_PROFILES)
def test_golden(example: str, podman: str, update_golden: bool) -> None:
    files = _rendered(example, podman)
    root = GOLDEN / example / podman
    if update_golden:
        for old in root.rglob("*"):
            if old.is_file():
                old.unlink()
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
    expected = {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()}
    assert sorted(files) == sorted(expected), (
        "file set differs: run pytest --update-golden and review the diff"
    )
    for rel, text in files.items():
        assert text == expected[rel], f"{rel} differs: run pytest --update-golden and review the diff"


def test_agent_unit_golden(update_golden: bool) -> None:
    path = GOLDEN / "sparc-agent.service"
    if update_golden:
        path.write_text(render_agent_unit())
    assert render_agent_unit() == path.read_text()


def test_every_file_carries_the_header() -> None:
    for example in EXAMPLES:
        for text in _rendered(example, "5.4").values():
            assert is_ours(text)
            assert f"stack={example} sha256=" in text.splitlines()[1]


def test_header_hash_covers_only_its_own_file(tmp_path: Path) -> None:
    """Changing one service's env changes that service's file and nothing else (no needless restarts)."""
    src = (ROOT / "examples" / "sparc-avatar.yaml").read_text()
    changed = tmp_path / "p.yaml"
    changed.write_text(src.replace("PUBLIC_HOST: localhost", "PUBLIC_HOST: example.org"))
    before = _rendered("sparc-avatar", "5.4")
    after = render(load_profile(str(changed)).profile, Target.for_podman("5.4"))
    differing = [k for k in before if before[k] != after[k]]
    assert differing == ["containers/systemd/sparc-avatar-signaling.container"]


def test_podman_versions_differ_where_they_should() -> None:
    old, new = _rendered("sparc-avatar", "4.4"), _rendered("sparc-avatar", "5.4")
    assert "containers/systemd/sparc-avatar.pod" in new and "systemd/user/sparc-avatar-pod.service" in old
    assert "ExecStartPre=-/bin/rm -f %t/%N.cid" in old["containers/systemd/sparc-avatar-mas.container"]
    assert "%N.cid" not in new["containers/systemd/sparc-avatar-mas.container"]
    assert (
        "Secret=sparc-avatar-openai-api-key,type=env,target=OPENAI_API_KEY"
        in new["containers/systemd/sparc-avatar-mas.container"]
    )
    assert (
        '"--secret=sparc-avatar-openai-api-key,type=env,target=OPENAI_API_KEY"'
        in old["containers/systemd/sparc-avatar-mas.container"]
    )


def test_a_oneshot_runs_once_and_gates_its_dependents() -> None:
    files = _rendered("loader", "5.4")
    loader = files["containers/systemd/loader-fetch-models.container"]
    server = files["containers/systemd/loader-server.container"]
    service = loader.split("[Service]", 1)[1]
    assert "Type=oneshot" in service and "RemainAfterExit=yes" in service and "Restart=no" in service
    assert "RestartSec" not in loader and "StartLimitBurst" not in loader  # no restart policy at all
    # a dependent waits for the one-shot's exit and never starts after it failed
    assert "Requires=loader-fetch-models.service\nAfter=loader-fetch-models.service" in server
    assert "Wants=loader-fetch-models.service" not in server
    assert "Type=oneshot" not in server and "Restart=on-failure" in server
