"""Project-level checks: lint, types, packaging, and README <-> CI agreement."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*argv: str, cwd: Path = ROOT, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.unit
def test_ruff_clean() -> None:
    _run(str(BIN / "ruff"), "check", ".")


@pytest.mark.unit
def test_mypy_strict_clean() -> None:
    _run(str(BIN / "mypy"))


@pytest.mark.unit
def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    marker = "<!-- test-command -->"
    assert marker in readme
    command = readme.split(marker, 1)[1].split("```", 2)[1].strip().splitlines()[-1].strip()
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines() if line.strip()]
    assert ci_lines[-1] == command


@pytest.mark.unit
def test_ci_tests_the_installed_wheel_not_the_checkout() -> None:
    """CI installs a wheel (not -e) and runs with -P: the package under test is the installed one."""
    import sparc_agent

    where = Path(sparc_agent.__file__).resolve()
    if os.environ.get("CI", "").lower() != "true":
        pytest.skip(f"not CI: testing {where}")
    assert not where.is_relative_to(ROOT / "sparc_agent"), f"CI imported the checkout's {where}, not a wheel"


@pytest.mark.slow
def test_wheel_ships_templates_and_every_package(tmp_path: Path) -> None:
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
        ".",
    )
    (wheel,) = tmp_path.glob("sparc_agent-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for template in [*ROOT.glob("quadlets/*.j2"), *ROOT.glob("units/*.j2")]:
        assert f"sparc_agent/render/templates/{template.parent.name}/{template.name}" in names
    assert "sparc_agent/export/templates/slurm-library.sh" in names
    for init in (ROOT / "sparc_agent").rglob("__init__.py"):
        assert str(init.relative_to(ROOT)) in names, f"{init.parent} is missing from pyproject's packages"
    # render from the unpacked wheel, outside the checkout: templates come from the package, not the tree
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sparc_agent, sys\n"
        "assert sparc_agent.__file__.startswith(sys.argv.pop(1)), sparc_agent.__file__\n"
        "from sparc_agent.cli.main import main\n"
        "main()"
    )
    out = _run(
        sys.executable,
        "-c",
        code,
        str(site),
        "render",
        str(ROOT / "examples/sparc-avatar.yaml"),
        "--out",
        "-",
        "--podman-version",
        "5.4",
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert "# --- containers/systemd/sparc-avatar.pod" in out


@pytest.mark.unit
@pytest.mark.parametrize(
    "module", ["sparc_agent.cli.main", "sparc_agent.cli.agent", "sparc_agent.cli.export"]
)
def test_cli_modules_import_first_in_a_fresh_interpreter(module: str) -> None:
    """The CLI modules register into one group; whichever is imported first must not hit a cycle."""
    _run(sys.executable, "-c", f"import {module}")
