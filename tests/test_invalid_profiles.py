"""Hostile and mistaken profiles: exit 2, `FILE:LINE: key.path:`, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sparc_agent.cli.main import main

pytestmark = pytest.mark.unit

HEAD = """apiVersion: sparc-agent/v1
name: demo
pod:
  ports: ["8000:8000", "127.0.0.1:3478:3478/udp"]
"""


def ports(*specs: str) -> str:
    """A profile whose pod.ports line (marked) holds `specs`."""
    line = "  ports: [" + ", ".join(specs) + "]  #!\n"
    return (
        HEAD.replace('  ports: ["8000:8000", "127.0.0.1:3478:3478/udp"]\n', line)
        + "services: {web: {image: x}}\n"
    )


def svc(body: str, extra: str = "") -> str:
    """A profile with one service `web` whose extra keys are `body` (indented 4)."""
    return HEAD + extra + "services:\n  web:\n    image: localhost/web:1\n" + body


# (id, yaml, key path expected in the message, message fragment). `#!` marks the line the error must name.
CASES: list[tuple[str, str, str, str]] = [
    (
        "env-newline",
        svc('    env: {A: "x\\nExecStartPre=/bin/evil"}  #!\n'),
        "services.web.env.A",
        "control character",
    ),
    ("env-nul", svc('    env: {A: "x\\0y"}  #!\n'), "services.web.env.A", "control character"),
    ("env-cr", svc('    env: {A: "x\\ry"}  #!\n'), "services.web.env.A", "control character"),
    (
        "command-newline",
        svc('    command: ["sh", "-c", "a\\nb"]  #!\n'),
        "services.web.command",
        "control character",
    ),
    (
        "command-unbalanced-quote",
        svc('    command: "sh -c \'oops"  #!\n'),
        "services.web.command",
        "cannot split",
    ),
    (
        "command-lone-semicolon",
        svc('    command: ["sh", ";", "reboot"]  #!\n'),
        "services.web.command",
        "command separator",
    ),
    ("command-empty", svc("    command: []  #!\n"), "services.web.command", "empty"),
    (
        "image-newline",
        HEAD + 'services:\n  web:\n    image: "busybox\\nExecStart=/x"  #!\n',
        "services.web.image",
        "control",
    ),
    (
        "image-space",
        HEAD + 'services:\n  web:\n    image: "busy box"  #!\n',
        "services.web.image",
        "invalid image",
    ),
    (
        "image-specifier",
        HEAD + 'services:\n  web:\n    image: "busybox%h"  #!\n',
        "services.web.image",
        "invalid image",
    ),
    ("image-missing", HEAD + "services:\n  web:  #!\n    env: {}\n", "services.web.image", "required"),
    ("volume-newline", svc('    volumes: ["/data\\n:/x"]  #!\n'), "services.web.volumes[0]", "control"),
    (
        "volume-relative",
        svc('    volumes: ["data/x:/x"]  #!\n'),
        "services.web.volumes[0]",
        "invalid volume name",
    ),
    ("volume-dotdot", svc('    volumes: ["/srv/../etc:/x"]  #!\n'), "services.web.volumes[0]", "'..'"),
    ("volume-undeclared", svc('    volumes: ["models:/x"]  #!\n'), "services.web.volumes[0]", "not declared"),
    (
        "volume-bad-option",
        svc('    volumes: ["/srv:/x:rx"]  #!\n'),
        "services.web.volumes[0]",
        "invalid volume options",
    ),
    ("volume-space", svc('    volumes: ["/my data:/x"]  #!\n'), "services.web.volumes[0]", "blank"),
    (
        "stack-name-upper",
        HEAD.replace("name: demo", "name: Demo  #!") + "services: {web: {image: x}}\n",
        "name",
        "invalid stack name",
    ),
    (
        "stack-name-specifier",
        HEAD.replace("name: demo", 'name: "de%mo"  #!') + "services: {web: {image: x}}\n",
        "name",
        "invalid stack name",
    ),
    (
        "stack-name-long",
        HEAD.replace("name: demo", "name: " + "a" * 41 + "  #!") + "services: {web: {image: x}}\n",
        "name",
        "at most 40",
    ),
    (
        "service-name-underscore",
        HEAD + "services:\n  my_web:  #!\n    image: x\n",
        "services.my_web",
        "invalid service name",
    ),
    (
        "service-name-long",
        HEAD + "services:\n  " + "w" * 31 + ":  #!\n    image: x\n",
        "services." + "w" * 31,
        "at most 30",
    ),
    # names that would take over a unit that is not the stack's (issue 16 item 2)
    (
        "stack-named-sparc-agent",
        HEAD.replace("name: demo", "name: sparc-agent  #!") + "services: {web: {image: x}}\n",
        "name",
        "sparc-agent's own units",
    ),
    (
        "stack-and-service-make-the-agent-unit",
        HEAD.replace("name: demo", "name: sparc") + "services:\n  agent:  #!\n    image: x\n",
        "services.agent",
        "the agent's own unit",
    ),
    (
        "stack-named-default",
        HEAD.replace("name: demo", "name: default  #!") + "services: {web: {image: x}}\n",
        "name",
        "default.target, which is a special target",
    ),
    (
        "stack-named-exit",
        HEAD.replace("name: demo", "name: exit  #!") + "services: {web: {image: x}}\n",
        "name",
        "exit.target",
    ),
    (
        "stack-dbus-service-broker",
        HEAD.replace("name: demo", "name: dbus  #!") + "services: {broker: {image: x}}\n",
        "name",
        "D-Bus",
    ),
    (
        "stack-systemd",
        HEAD.replace("name: demo", "name: systemd  #!") + "services: {web: {image: x}}\n",
        "name",
        "systemd's own units",
    ),
    (
        "service-named-pod",
        HEAD + "services:\n  web: {image: x}\n  pod:  #!\n    image: x\n",
        "services.pod",
        "demo-pod.service, which is also the stack's pod",
    ),
    (
        "service-shadows-volume-unit",
        HEAD + "volumes: {data: {}}\nservices:\n  data-volume:  #!\n    image: x\n    volumes: [data:/d]\n",
        "services.data-volume",
        "demo-data-volume.service, which is also the unit of volumes.data",
    ),
    (
        "service-named-infra",
        HEAD + "services:\n  infra:  #!\n    image: x\n",
        "services.infra",
        "infra container",
    ),
    ("port-range-mismatch", ports('"1-3:1-2"'), "pod.ports[0]", "differ in length"),
    ("port-sexagesimal", ports("1022:22"), "pod.ports[0]", "base-60"),
    ("port-out-of-range", ports('"70000:80"'), "pod.ports[0]", "1-65535"),
    ("port-protocol", ports('"80:80/sctp"'), "pod.ports[0]", "protocol"),
    ("port-duplicate", ports('"8000:8000", "8000:9000"'), "pod.ports[1]", "already"),
    ("port-bad-ip", ports('"8000:8000", "1.2.3:3478:3478/udp"'), "pod.ports[1]", "host address"),
    (
        "bind-not-ip",
        HEAD.replace("pod:\n", "pod:\n  bind: localhost  #!\n") + "services: {web: {image: x}}\n",
        "pod.bind",
        "IP address",
    ),
    (
        "cycle",
        HEAD
        + "services:\n  a: {image: x, depends_on: {b: started}}\n  b: {image: x, depends_on: {a: started}}  #!\n",
        "services.b.depends_on.a",
        "cycle: a -> b -> a",
    ),
    (
        "depends-unknown",
        svc("    depends_on: {nope: started}  #!\n"),
        "services.web.depends_on.nope",
        "no service",
    ),
    ("depends-self", svc("    depends_on: {web: started}  #!\n"), "services.web.depends_on.web", "itself"),
    (
        "depends-bad-condition",
        svc("    depends_on: {web: ready}  #!\n"),
        "services.web.depends_on.web",
        "started, healthy or completed",
    ),
    (
        "oneshot-with-probe",
        HEAD + "services:\n  load:\n    image: x\n    oneshot: true\n    health: {tcp: {port: 8000}}  #!\n",
        "services.load.health",
        "one-shot has no health probe",
    ),
    (
        "oneshot-with-restart",
        HEAD + "services:\n  load:\n    image: x\n    oneshot: true\n    restart: {policy: always}  #!\n",
        "services.load.restart",
        "never restarted",
    ),
    (
        "oneshot-not-bool",
        HEAD + "services:\n  load:\n    image: x\n    oneshot: once  #!\n",
        "services.load.oneshot",
        "bool",
    ),
    (
        "completed-on-long-running",
        HEAD + "services:\n  db: {image: x}\n  web:\n    image: x\n    depends_on: {db: completed}  #!\n",
        "services.web.depends_on.db",
        "never `completed`",
    ),
    (
        "started-on-oneshot",
        HEAD
        + "services:\n  load: {image: x, oneshot: true}\n  web:\n    image: x\n    depends_on: [load]  #!\n",
        "services.web.depends_on.load",
        "depend on it with `completed`, not `started`",
    ),
    (
        "healthy-on-oneshot",
        HEAD
        + "services:\n  load: {image: x, oneshot: true}\n  web:\n    image: x\n    depends_on: {load: healthy}  #!\n",
        "services.web.depends_on.load",
        "depend on it with `completed`, not `healthy`",
    ),
    (
        "depends-healthy-no-probe",
        HEAD + "services:\n  db: {image: x}\n  web:\n    image: x\n    depends_on: {db: healthy}  #!\n",
        "services.web.depends_on.db",
        "no health probe",
    ),
    ("secret-undeclared", svc("    secrets: {KEY: nope}  #!\n"), "services.web.secrets.KEY", "not declared"),
    ("secret-two-sources", svc("", "secrets:\n  k: {file: /x, env: Y}  #!\n"), "secrets.k", "exactly one"),
    ("secret-relative-file", svc("", "secrets:\n  k: {file: x.key}  #!\n"), "secrets.k.file", "absolute"),
    (
        "probe-two-kinds",
        svc("    health: {tcp: {port: 8000}, http: {port: 8000}}  #!\n"),
        "services.web.health",
        "exactly one probe",
    ),
    ("probe-none", svc("    health: {interval: 2s}  #!\n"), "services.web.health", "exactly one probe"),
    (
        "probe-bad-status",
        svc('    health: {http: {port: 8000, status: "2xx"}}  #!\n'),
        "services.web.health.http.status",
        "invalid status",
    ),
    (
        "probe-unknown-key",
        svc("    health: {htp: {port: 8000}}  #!\n"),
        "services.web.health.htp",
        "did you mean 'http'",
    ),
    (
        "duration-number",
        svc("    health: {tcp: {port: 8000}, interval: 5}  #!\n"),
        "services.web.health.interval",
        "duration",
    ),
    (
        "duration-garbage",
        svc("    health: {tcp: {port: 8000}, timeout: 2 s}  #!\n"),
        "services.web.health.timeout",
        "invalid duration",
    ),
    ("memory-bad", svc("    resources: {memory: 16q}  #!\n"), "services.web.resources.memory", "memory size"),
    ("cpus-zero", svc("    resources: {cpus: 0}  #!\n"), "services.web.resources.cpus", "greater than 0"),
    ("gpus-zero", svc("    gpus: 0  #!\n"), "services.web.gpus", "at least 1"),
    (
        "env-bad-name",
        svc("    env: {BAD-NAME: x}  #!\n"),
        "services.web.env.BAD-NAME",
        "invalid variable name",
    ),
    ("env-yaml11-bool", svc("    env: {DEBUG: yes}  #!\n"), "services.web.env.DEBUG", "quote it"),
    ("env-mapping", svc("    env: {A: {b: c}}  #!\n"), "services.web.env.A", "a mapping"),
    (
        "restart-policy",
        svc("    restart: {policy: sometimes}  #!\n"),
        "services.web.restart.policy",
        "on-failure",
    ),
    (
        "restart-backoff-order",
        svc("    restart: {backoff: {initial: 5m, max: 1s}}  #!\n"),
        "services.web.restart.backoff",
        "longer than",
    ),
    (
        "unknown-top-key",
        svc("").replace("services:", "servics:  #!\n  x: 1\nservices:"),
        "servics",
        "did you mean 'services'",
    ),
    ("service-ports", svc('    ports: ["80:80"]  #!\n'), "services.web.ports", "use pod.ports"),
    (
        "api-version",
        HEAD.replace("sparc-agent/v1", "sparc-agent/v9  #!") + "services: {web: {image: x}}\n",
        "apiVersion",
        "sparc-agent/v1",
    ),
    ("duplicate-key", svc("    image: localhost/other:1  #!\n"), "services.web.image", "duplicate key"),
    ("not-a-mapping", "- just  #!\n- a list\n", "(document)", "mapping"),
    ("no-services", HEAD + "services: {}  #!\n", "services", "empty"),
    # input messages (issue 12 item 8): the tag and its line, "empty", the item's own key path
    (
        "yaml-python-object",
        svc("    env: !!python/object:os.system {A: 1}  #!\n"),
        "services.web.env",
        "unknown YAML tag !!python/object:os.system",
    ),
    (
        "yaml-python-apply",
        HEAD + "services: !!python/object/apply:os.system [ls]  #!\n",
        "services",
        "unknown YAML tag !!python/object/apply:os.system",
    ),
    ("yaml-local-tag", svc("    command: !mine x  #!\n"), "services.web.command", "unknown YAML tag !mine"),
    ("empty-file", "", "(document)", "the profile is empty"),
    ("only-a-comment", "# nothing here yet  #!\n", "(document)", "the profile is empty"),
    ("command-item", svc("    command: [sh, [x]]  #!\n"), "services.web.command[1]", "word 1 is a list"),
    (
        "command-item-block",
        svc("    command:\n      - sh\n      - -c\n      - {x: 1}  #!\n"),
        "services.web.command[2]",
        "word 2 is a mapping",
    ),
    ("gpus-item", svc("    gpus: [0, {a: 1}]  #!\n"), "services.web.gpus[1]", "invalid GPU id"),
    (
        "depends-on-item",
        svc("    depends_on: [a, [b]]  #!\n"),
        "services.web.depends_on[1]",
        "a service name",
    ),
    (
        "probe-port-bound",
        svc("    health: {http: {port: 99999}}  #!\n"),
        "services.web.health.http.port",
        "at most",
    ),
]

BOMB = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcde", "bcdef", strict=True)
)
EXTRA: list[tuple[str, str, str, str]] = [
    ("alias-bomb", BOMB, "", "alias bomb"),
    ("deep-nesting", "a: " + "[" * 150 + "]" * 150 + "\n", "a[0][0]", "deeper than 100"),
    ("not-yaml", "a: [unclosed\n", "(document)", "not valid YAML"),
]


def _expected_line(text: str) -> int | None:
    for i, line in enumerate(text.splitlines(), 1):
        if "#!" in line:
            return i
    return None


@pytest.mark.parametrize(
    ("case_id", "text", "key", "fragment"), CASES + EXTRA, ids=[c[0] for c in CASES + EXTRA]
)
def test_invalid_profile_is_refused_and_nothing_written(
    tmp_path: Path, case_id: str, text: str, key: str, fragment: str
) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(text)
    out = tmp_path / "out"
    runner = CliRunner()

    for args in (
        ["validate", str(profile)],
        ["render", str(profile), "--out", str(out), "--podman-version", "5.4"],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        line = _expected_line(text)
        prefix = f"{profile}:{line}: " if line else f"{profile}:"
        match = [m for m in result.output.splitlines() if m.startswith(prefix) and f": {key}" in m]
        assert match, f"expected {prefix}...{key}: in\n{result.output}"
        assert fragment in " ".join(match), result.output
    assert not out.exists()


def test_at_least_thirty_hostile_cases() -> None:
    assert len(CASES) + len(EXTRA) >= 30


def test_non_utf8_profile_names_file_line_and_byte(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_bytes(b'apiVersion: sparc-agent/v1\nname: demo\nservices:\n  web: {image: "\xff"}\n')
    result = CliRunner().invoke(main, ["validate", str(profile)])
    assert result.exit_code == 2
    assert result.output.startswith(f"{profile}:4: (document): not UTF-8 (byte 64: 0xff)"), result.output


def test_bad_set_override_names_the_flag(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(svc(""))
    result = CliRunner().invoke(main, ["validate", str(profile), "--set", "services.web.env.A=a\x00b"])
    assert result.exit_code == 2
    assert result.output.startswith("--set services.web.env.A=a\\x00b: services.web.env.A: "), result.output
    assert "\x00" not in result.output


def test_overlay_error_names_the_overlay_line(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(svc(""))
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("services:\n  web:\n    gpus: none\n")
    result = CliRunner().invoke(main, ["validate", str(base), "-f", str(overlay)])
    assert result.exit_code == 2
    assert f"{overlay}:3: services.web.gpus: invalid gpus" in result.output
