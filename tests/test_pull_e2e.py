"""apply pulls missing images itself, before it writes or starts anything: against a real local registry.

On both hosts (apply_host: bookworm = podman 4.3.1, trixie = podman 5.4), with Debian's docker-registry on
127.0.0.1 (tests/support/registry.py) and a registries.conf marking it insecure, passed to
`sparc-agent apply` in CONTAINERS_REGISTRIES_CONF as a user would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.reader import quadlet_file
from support.registry import REGISTRY, LocalRegistry, local_registry
from support.stackfiles import avatar_profile, sparc, status, unit_props, write_profile
from support.testhost import require_testhost, unavailable
from support.trixiehost import ApplyHost

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="session")
def registry(standin_images: dict[str, str]) -> Iterator[LocalRegistry]:
    require_testhost()
    if not REGISTRY.is_file():
        unavailable(f"{REGISTRY} missing: apt-get install docker-registry (scripts/test-host-setup.sh)")
    with local_registry() as reg:
        yield reg


@pytest.fixture(scope="session")
def pushed_mas(registry: LocalRegistry, standin_images: dict[str, str]) -> str:
    """The mas stand-in, on the registry only, under a name no local store has."""
    return registry.push(standin_images["mas"], f"sparc-pull/mas-{os.urandom(3).hex()}:v1")


def small_profile(h: ApplyHost, mas_image: str | None = None) -> dict[str, Any]:
    """riva + mas of the avatar stack: enough to show ordering, quick to start."""
    doc = avatar_profile(h.mgr, h.tmp)
    for name in ("signaling", "turn", "unity"):
        del doc["services"][name]
    if mas_image:
        doc["services"]["mas"]["image"] = mas_image
    return doc


def stack_files(h: ApplyHost) -> dict[str, tuple[bytes, int]]:
    """Every file under the manager's config dir (quadlets, units), with bytes and mtime."""
    return {
        str(p): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in h.mgr.config_dir.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def test_missing_image_is_pulled_with_progress_before_any_unit_starts(
    apply_host: ApplyHost, registry: LocalRegistry, pushed_mas: str
) -> None:
    h, mgr = apply_host, apply_host.mgr
    assert h.podman("image", "exists", pushed_mas, check=False).returncode == 1, "must be missing locally"
    conf = registry.registries_conf(h.tmp / "registries.conf")
    profile = write_profile(small_profile(h, pushed_mas), h.tmp / "p.yaml")
    try:
        t0 = time.monotonic()
        done = sparc(mgr, "apply", str(profile), env={"CONTAINERS_REGISTRIES_CONF": str(conf)})
        seconds = time.monotonic() - t0
        assert done.returncode == 0, done.stdout + done.stderr
        assert "2/2 services healthy" in done.stdout, done.stdout
        err = done.stderr
        print(f"apply with a pull on {h.kind}: {seconds:.2f} s\n{err}")
        assert f"pulling {pushed_mas} (not present locally)" in err, err
        progress = [ln for ln in err.splitlines() if ln.startswith(f"  {pushed_mas}: ")]
        assert any("Copying blob" in ln for ln in progress) and any(
            "Writing manifest" in ln for ln in progress
        )
        # the whole pull happens before the first unit is started
        first_start = err.index("started ")
        assert err.rindex(f"  {pushed_mas}: ") < first_start, err
        assert h.podman("image", "exists", pushed_mas, check=False).returncode == 0
        report = status(mgr, mgr.name)
        assert [s["health"] for s in report["services"]] == ["ok", "ok"], report
    finally:
        # only the name goes: the image is the mas stand-in's (same config digest, same id)
        h.podman("untag", pushed_mas, pushed_mas, check=False)


def test_unavailable_image_fails_early_writes_nothing_and_leaves_the_stack_alone(
    apply_host: ApplyHost, registry: LocalRegistry, pushed_mas: str
) -> None:
    h, mgr = apply_host, apply_host.mgr
    env = {"CONTAINERS_REGISTRIES_CONF": str(registry.registries_conf(h.tmp / "registries.conf"))}
    missing = pushed_mas.rsplit(":", 1)[0] + ":no-such-tag"
    state = mgr.state_dir / "sparc-agent" / mgr.name
    bad = write_profile(small_profile(h, missing), h.tmp / "bad.yaml")

    # 1. no stack yet: exit 3 naming the image, and not one unit file, generation or unit
    before = stack_files(h)
    t0 = time.monotonic()
    done = sparc(mgr, "apply", str(bad), env=env)
    took = time.monotonic() - t0
    print(f"apply with an unavailable image on {h.kind}: exit {done.returncode} after {took:.2f} s")
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"cannot pull image {missing}" in done.stderr, done.stderr
    assert "started " not in done.stderr and "stopping " not in done.stderr
    assert stack_files(h) == before
    assert not quadlet_file(mgr.config_dir, mgr.name, f"{mgr.name}.pod").exists()
    assert not (state / "generations").exists() and not (state / "current").exists()
    assert unit_props(mgr, f"{mgr.name}-riva.service")["ActiveState"] == "inactive"
    assert h.podman("secret", "exists", f"{mgr.name}-openai-api-key", check=False).returncode != 0

    # 2. a running stack: the failed apply touches none of its files, generations or processes
    good = write_profile(small_profile(h), h.tmp / "good.yaml")
    ok = sparc(mgr, "apply", str(good), env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    files = stack_files(h)
    generations = sorted(p.name for p in (state / "generations").iterdir())
    units = {s: unit_props(mgr, f"{mgr.name}-{s}.service") for s in ("riva", "mas")}
    done = sparc(mgr, "apply", str(bad), env=env)
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"cannot pull image {missing}" in done.stderr, done.stderr
    assert stack_files(h) == files
    assert sorted(p.name for p in (state / "generations").iterdir()) == generations
    assert {s: unit_props(mgr, f"{mgr.name}-{s}.service") for s in ("riva", "mas")} == units
    report = status(mgr, mgr.name)
    assert report["generation"] == 1 and [s["health"] for s in report["services"]] == ["ok", "ok"], report


def test_registry_fixture_serves_what_was_pushed(registry: LocalRegistry, pushed_mas: str) -> None:
    name, tag = pushed_mas.split("/", 1)[1].rsplit(":", 1)
    assert registry.has(name, tag) and not registry.has(name, "no-such-tag")
    assert Path(f"/proc/{registry.pid}").exists()
