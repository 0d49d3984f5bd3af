"""The package layout's rules, checked on the source (AST) so that breaking one fails here.

- only `sparc_agent/host/` starts processes (subprocess, asyncio's create_subprocess_*, os.exec*/spawn*/
  fork/system/popen, Popen);
- only `sparc_agent/host/systemd.py` imports dbus-fast;
- each package's `__init__` docstring states what it never imports ("Never imports: a, b."): that line
  is the rule, read from the docstring and checked against every module of the package;
- the long-running agent does not load pydantic or jinja2, not even through what it imports.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sparc_agent"
HOST = PACKAGE / "host"

pytestmark = pytest.mark.unit

# what each package's docstring must forbid at least (the docstring may forbid more)
REQUIRED_RULES = {
    "profile": {"host", "state", "apply", "agent"},
    "render": {"host", "state", "apply", "agent"},
    "probes": {"apply", "agent"},
    "agent": {"pydantic", "jinja2"},
    "host": {"profile", "render"},
}

_OS_SPAWNERS = re.compile(r"^(exec[lv]p?e?|spawn[lv]p?e?|posix_spawnp?|fork|forkpty|system|popen)$")


def _modules() -> Iterator[Path]:
    yield from sorted(PACKAGE.rglob("*.py"))


def _name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(source: str, module: str) -> set[str]:
    """Every module name `source` imports (dotted, absolute), whether at the top, in a function or
    under TYPE_CHECKING; `from a import b` counts as both `a` and `a.b`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: -node.level] if node.level else []
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def spawning(source: str) -> list[str]:
    """The ways `source` could start a process, as "line: what"."""
    hits: list[str] = []
    for node in ast.walk(ast.parse(source)):
        what = None
        if isinstance(node, ast.Import):
            names = [
                a.name for a in node.names if a.name.split(".")[0] in ("subprocess", "multiprocessing", "pty")
            ]
            what = ", ".join(names) or None
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if mod.split(".")[0] in ("subprocess", "multiprocessing", "pty") or mod == "asyncio.subprocess":
                what = f"from {mod}"
            elif mod == "os" and any(_OS_SPAWNERS.match(a.name) for a in node.names):
                what = f"from os import {', '.join(a.name for a in node.names)}"
            elif mod == "asyncio" and any(a.name.startswith("create_subprocess") for a in node.names):
                what = "from asyncio import create_subprocess_*"
        elif isinstance(node, ast.Attribute):
            base = node.value.id if isinstance(node.value, ast.Name) else None
            if node.attr in ("subprocess", "Popen") or node.attr.startswith("create_subprocess"):
                what = f".{node.attr}"
            elif base == "os" and _OS_SPAWNERS.match(node.attr):
                what = f"os.{node.attr}"
        elif isinstance(node, ast.Name) and node.id == "Popen":
            what = "Popen"
        if what:
            hits.append(f"{getattr(node, 'lineno', '?')}: {what}")
    return hits


def never_imports(package: Path) -> set[str]:
    """The names listed after "Never imports:" in the package's docstring (up to the next period)."""
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    m = re.search(r"Never imports:\s*(.+?)\.(?:\s|$)", doc, re.S)
    if not m:
        return set()
    return {w.strip(" `\n") for w in m.group(1).replace("\n", " ").split(",") if w.strip(" `\n")}


def _qualified(word: str) -> str:
    """`host` -> `sparc_agent.host` (a package of ours), `pydantic` -> `pydantic`."""
    ours = (PACKAGE / word).is_dir() or (PACKAGE / f"{word}.py").is_file()
    return f"sparc_agent.{word}" if ours else word


def _violations(package: Path, forbidden: set[str]) -> list[str]:
    """One line per module and broken rule."""
    bad: list[str] = []
    for path in sorted(package.rglob("*.py")):
        names = sorted(imports(path.read_text(), _name(path, package.parent)))
        for rule in sorted(forbidden):
            qualified = _qualified(rule)
            hits = [n for n in names if n == qualified or n.startswith(qualified + ".")]
            if hits:
                bad.append(f"{path.relative_to(package.parent)} imports {hits[0]} (docstring: never {rule})")
    return bad


# ---------------------------------------------------------------- the checkers catch what they must


def test_spawning_catches_every_way_to_start_a_process() -> None:
    bad = {
        "import subprocess": 1,
        "from subprocess import run": 1,
        "import asyncio\nasyncio.create_subprocess_exec('x')": 1,
        "from asyncio import create_subprocess_shell": 1,
        "import asyncio\nx = asyncio.subprocess.PIPE": 1,
        "import os\nos.execv('/bin/x', ['x'])": 1,
        "import os\nos.execvpe('x', [], {})": 1,
        "import os\nos.spawnlp(0, 'x')": 1,
        "import os\nos.fork()": 1,
        "import os\nos.posix_spawn('x', [], {})": 1,
        "import os\nos.system('x')": 1,
        "from os import execv": 1,
        "import multiprocessing": 1,
        "p = Popen(['x'])": 1,
    }
    for source, count in bad.items():
        assert len(spawning(source)) >= count, source
    assert spawning("import os\nos.getpid(); os.kill(1, 0); os.execute = 1\n'subprocess in a string'") == []


def test_imports_resolves_relative_and_nested_imports() -> None:
    source = "from . import x\nfrom ..host import podman\ndef f():\n    import pydantic.fields\n"
    found = imports(source, "sparc_agent.render.escape")
    assert {"sparc_agent.render.x", "sparc_agent.host.podman", "pydantic.fields"} <= found


def test_docstring_rules_are_read_and_enforced(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""A package.\n\nNever imports: host,\n  state, jinja2.\n"""\n')
    (pkg / "mod.py").write_text("from sparc_agent.host.podman import run\nimport jinja2\nimport json\n")
    assert never_imports(pkg) == {"host", "state", "jinja2"}
    bad = _violations(pkg, never_imports(pkg))
    assert len(bad) == 2 and "sparc_agent.host.podman" in bad[0] + bad[1] and "jinja2" in bad[0] + bad[1]


# ---------------------------------------------------------------- the rules hold for sparc_agent


def test_only_host_starts_processes() -> None:
    found = []
    for path in _modules():
        if path.is_relative_to(HOST):
            continue
        found += [f"{path.relative_to(ROOT)}:{hit}" for hit in spawning(path.read_text())]
    assert found == [], "start processes through sparc_agent.host.process, not directly"


def test_only_the_systemd_module_speaks_dbus() -> None:
    users = sorted(
        str(path.relative_to(ROOT))
        for path in _modules()
        if any(n.split(".")[0] == "dbus_fast" for n in imports(path.read_text(), _name(path)))
    )
    assert users == ["sparc_agent/host/systemd.py"]


@pytest.mark.parametrize("package", sorted(REQUIRED_RULES))
def test_package_keeps_the_import_rule_its_docstring_states(package: str) -> None:
    forbidden = never_imports(PACKAGE / package)
    assert REQUIRED_RULES[package] <= forbidden, (
        f"sparc_agent/{package}/__init__.py must say 'Never imports: ...'"
    )
    assert _violations(PACKAGE / package, forbidden) == []


def test_the_agent_loads_neither_pydantic_nor_jinja2() -> None:
    # a fresh interpreter: what the agent's modules pull in, transitively, at import time
    code = (
        "import sys, sparc_agent.agent.runner, sparc_agent.agent.supervisor, sparc_agent.probes\n"
        "heavy = sorted(m for m in ('pydantic', 'jinja2', 'sparc_agent.render', 'sparc_agent.profile.model')"
        " if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_noop_apply_loads_neither_pydantic_nor_jinja2() -> None:
    """`apply` of an unchanged profile answers from apply/fastpath.py before validation: the CLI and
    everything fastpath imports, at the top or inside its functions, stay light (pydantic and jinja2
    are ~0.1 s of a fresh process, more than half of what the no-op is allowed)."""
    fastpath = PACKAGE / "apply" / "fastpath.py"
    lazy = sorted(
        m for m in imports(fastpath.read_text(), "sparc_agent.apply.fastpath") if m.startswith("sparc_agent")
    )
    loads = (
        "import importlib, sys, sparc_agent.cli.main\n"
        f"for name in {lazy!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError:\n"
        "        pass  # `from a import b` where b is a name, not a module\n"
        "heavy = sorted(m for m in ('pydantic', 'jinja2', 'yaml') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", loads], cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
