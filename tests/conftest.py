from __future__ import annotations

from pathlib import Path

import pytest

# the real test host (user managers, quadlet, podman): fixtures in tests/support/
pytest_plugins = (
    ["support.testhost", "support.trixiehost", "support.rootless"]
    if (Path(__file__).parent / "support" / "testhost.py").exists()
    else []
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", help="rewrite tests/golden/ from the current renderer"
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))
