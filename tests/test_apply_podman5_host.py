"""The trixie test root's own rules (the e2e tests on it are parametrized in test_apply_e2e.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import support.trixiehost as trixiehost


@pytest.mark.unit
def test_missing_trixie_root_skips_on_a_laptop_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trixiehost, "require_testhost", lambda: None)
    monkeypatch.setattr(trixiehost, "trixie_problems", lambda: ["mmdebstrap missing"])
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("SPARC_REQUIRE_TESTHOST", raising=False)
    with pytest.raises(pytest.skip.Exception, match="trixie test root not available: mmdebstrap missing"):
        trixiehost.require_trixie()
    for var, value in (("CI", "true"), ("SPARC_REQUIRE_TESTHOST", "1")):
        with monkeypatch.context() as m:
            m.setenv(var, value)
            with pytest.raises(pytest.fail.Exception, match="trixie test root not available"):
                trixiehost.require_trixie()


@pytest.mark.unit
def test_podman_inside_never_uses_the_roots_default_store_or_network() -> None:
    # every podman call inside carries these: overlay store + own network, see trixiehost.PODMAN_ENV
    assert set(trixiehost.PODMAN_ENV) >= {"CONTAINERS_STORAGE_CONF", "CONTAINERS_CONF_OVERRIDE"}
    assert 'driver = "overlay"' in trixiehost.CONFIG_FILES[trixiehost.STORAGE_CONF]
    assert f'default_network = "{trixiehost.NETWORK}"' in trixiehost.CONFIG_FILES[trixiehost.CONF_OVERRIDE]
    mgr = trixiehost.TrixieManager(name="tx-000000", root=Path("/tmp/tx-000000"), env={})
    assert trixiehost.PODMAN_ENV.items() <= mgr.environ().items()
    assert "VIRTUAL_ENV" not in mgr.environ() and "CONTAINERS_CONF" not in mgr.environ()
