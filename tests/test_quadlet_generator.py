"""Rendered files go through the real quadlet generator and `systemd-analyze verify` cleanly,
and every value reaches podman's command line literally (escaping proven, not assumed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from support.testhost import unavailable

from sparc_agent.profile.load import ProfileInvalid, load_profile
from sparc_agent.profile.model import Mount, Profile
from sparc_agent.render import Names, Target, render
from sparc_agent.versions import Version

QUADLET = "/usr/libexec/podman/quadlet"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _quadlet_generator() -> None:
    if not Path(QUADLET).exists():
        unavailable("no quadlet generator (run scripts/test-host-setup.sh)")


def generate(files: dict[str, str], work: Path) -> tuple[dict[str, str], str]:
    """Write `files` like apply would, run the generator for real; return {unit: text} and its stderr."""
    if work.exists():
        shutil.rmtree(work)
    for rel, text in files.items():
        (work / "cfg" / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / "cfg" / rel).write_text(text)
    quadlets, out = work / "cfg/containers/systemd", work / "gen"
    out.mkdir(parents=True)
    env = {**os.environ, "QUADLET_UNIT_DIRS": str(quadlets)}
    dry = subprocess.run([QUADLET, "-dryrun", "-user"], env=env, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "converting" not in dry.stderr, dry.stderr
    done = subprocess.run([QUADLET, "-user", str(out)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    units = {p.name: p.read_text() for p in out.iterdir() if p.is_file()}
    user_units = work / "cfg/systemd/user"
    if user_units.exists():
        units.update({p.name: p.read_text() for p in user_units.iterdir()})
    return units, dry.stderr


def verify(units: dict[str, str], work: Path) -> None:
    """`systemd-analyze --user verify` exits 0 even on unknown keys, so any output is a failure."""
    unit_dir = work / "verify"
    unit_dir.mkdir(exist_ok=True)
    for name, text in units.items():
        (unit_dir / name).write_text(text)
    runtime = work / "run"
    runtime.mkdir(exist_ok=True, mode=0o700)
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:", "XDG_RUNTIME_DIR": str(runtime)}
    paths = [str(unit_dir / n) for n in sorted(units)]
    done = subprocess.run(
        ["systemd-analyze", "--user", "verify", *paths], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def exec_start_words(unit_text: str) -> list[str]:
    """ExecStart= split and unescaped the way systemd does it (quotes, C escapes, %%, $$)."""
    return exec_start_words_of(next(line for line in unit_text.splitlines() if line.startswith("ExecStart=")))


def exec_start_words_of(line: str) -> list[str]:
    return [_expand(w) for w in _split(line.split("=", 1)[1])]


def _expand(word: str) -> str:
    """systemd's specifier and variable expansion, with anything expanded shown as <EXPANDED>."""
    out, i = "", 0
    if re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", word):
        return "<EXPANDED>"  # $NAME as a whole word is a variable
    while i < len(word):
        pair = word[i : i + 2]
        if pair in ("%%", "$$"):
            out, i = out + pair[0], i + 2
        elif (pair.startswith("%") and len(pair) == 2) or pair == "${":
            out, i = out + "<EXPANDED>", i + 2
        else:
            out, i = out + word[i], i + 1
    return out


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "s": " ", "a": "\a", "b": "\b"}


def _split(text: str) -> list[str]:
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            break
        word, quote = "", None
        if text[i] in "\"'":
            quote = text[i]
            i += 1
        while i < n:
            c = text[i]
            if quote and c == quote:
                i += 1
                break
            if not quote and c in " \t":
                break
            if c == "\\" and i + 1 < n:
                word += _ESCAPES.get(text[i + 1], text[i + 1])
                i += 2
                continue
            word += c
            i += 1
        words.append(word)
    return words


@pytest.mark.parametrize("podman", ["4.4", "5.4"])
@pytest.mark.parametrize("example", ["sparc-avatar", "sparc-backend", "loader"])
def test_examples_pass_the_real_generator_and_verify(example: str, podman: str, tmp_path: Path) -> None:
    where = ROOT / ("tests/profiles" if example == "loader" else "examples")  # loader: a one-shot
    profile = load_profile(str(where / f"{example}.yaml")).profile
    units, _ = generate(render(profile, Target.for_podman(podman)), tmp_path)
    assert f"{example}-pod.service" in units
    for name in profile.services:
        assert f"{example}-{name}.service" in units
    verify(units, tmp_path)
    if example == "loader":  # quadlet keeps a one-shot's Type= and runs the container in the foreground
        loader = units["loader-fetch-models.service"]
        assert "Type=oneshot" in loader and "RemainAfterExit=yes" in loader and "Type=notify" not in loader
        assert "-d" not in exec_start_words(loader) and "--sdnotify" not in loader
        # the pod outlives the one-shot's exit: podman takes the last --exit-policy it is given
        create = next(line for line in units["loader-pod.service"].splitlines() if " pod create " in line)
        assert [w for w in exec_start_words_of(create) if w.startswith("--exit-policy")][
            -1
        ] == "--exit-policy=continue"


def test_split_matches_systemd_quoting() -> None:
    assert _split(r'a "b c" "d\"e" f\\g') == ["a", "b c", 'd"e', "f\\g"]


# ---------------------------------------------------------------- property: accepted => generated cleanly

_SAFE_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x7f\u2028\u2029\x85")
# mostly the characters systemd and quadlet treat specially, some of anything else
_word = st.text(st.sampled_from(list("$%{}\"'\\ ;=:hnN~ab")), min_size=1, max_size=12) | st.text(
    _SAFE_CHARS, min_size=1, max_size=12
)
_slug = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
_env_name = st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True)
# host paths: no blanks, quotes or backslashes (refused), but every character systemd expands
_path_part = st.text(st.sampled_from(list("%${}hnN;=~._-ab")), min_size=1, max_size=10)


@st.composite
def profiles(draw: Any) -> dict[str, Any]:
    names = draw(st.lists(_slug, min_size=1, max_size=4, unique=True))
    ports = draw(st.lists(st.integers(1024, 60000), min_size=1, max_size=3, unique=True))
    volumes = draw(st.lists(_slug, max_size=2, unique=True))
    secrets = draw(st.lists(_slug, max_size=2, unique=True))
    services: dict[str, Any] = {}
    for i, name in enumerate(names):
        svc: dict[str, Any] = {
            "image": draw(st.sampled_from(["localhost/a:1", "docker.io/library/b", "r.io:5000/x/y:2.0"]))
        }
        if draw(st.booleans()):
            svc["command"] = draw(st.lists(_word, min_size=1, max_size=4))
        if draw(st.booleans()):
            svc["env"] = draw(st.dictionaries(_env_name, _word | st.integers(), min_size=1, max_size=4))
        if draw(st.booleans()):
            svc["volumes"] = [
                *([f"{draw(st.sampled_from(volumes))}:/data"] if volumes else []),
                f"~/{draw(_path_part)}:/home/x:ro",
                "~:/home/all",
                f"/srv/{draw(_path_part)}:/b:Z",
            ]
        if secrets and draw(st.booleans()):
            svc["secrets"] = {draw(_env_name): draw(st.sampled_from(secrets))}
        if draw(st.booleans()):
            svc["gpus"] = draw(st.sampled_from(["all", 1, 2, ["0", "GPU-abc"]]))
        if draw(st.booleans()):
            svc["resources"] = {"cpus": 1.5, "memory": "512m", "pids": 100}
        if draw(st.booleans()):
            port = draw(st.sampled_from(ports))
            svc["health"] = draw(
                st.sampled_from(
                    [
                        {"tcp": {"port": port}},
                        {"http": {"port": port, "path": "/h%x"}},
                        {"exec": {"command": ["true"]}},
                    ]
                )
            )
        if i and draw(st.booleans()):
            svc["depends_on"] = {names[draw(st.integers(0, i - 1))]: "started"}
        svc["restart"] = {"policy": draw(st.sampled_from(["no", "on-failure", "always"]))}
        services[name] = svc
    return {
        "apiVersion": "sparc-agent/v1",
        "name": draw(_slug),
        "pod": {"ports": [f"{p}:{p}" for p in ports]},
        "volumes": {v: {} for v in volumes},
        "secrets": {s: {"env": "HOME"} for s in secrets},
        "services": services,
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=profiles(), podman=st.sampled_from(["4.4", "5.0", "5.4"]))
def test_accepted_profiles_generate_and_values_arrive_literally(
    doc: dict[str, Any], podman: str, tmp_path: Path
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        profile = load_profile(str(path)).profile
    except ProfileInvalid:
        reject()  # the property is about what the model accepts
    units, _ = generate(render(profile, Target.for_podman(podman)), tmp_path / "w")
    verify(units, tmp_path / "w")
    assert_every_field_arrives(profile, units)


def flag_values(words: list[str], flag: str) -> list[str]:
    """The values of `flag` on a command line, written `--flag V` or `--flag=V`."""
    out = []
    for i, word in enumerate(words):
        if word == flag and i + 1 < len(words):
            out.append(words[i + 1])
        elif word.startswith(flag + "="):
            out.append(word.removeprefix(flag + "="))
    return out


def unit_lines(unit_text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit_text.splitlines() if line.startswith(key + "=")]


def expected_mount(profile: Profile, mount: Mount) -> str:
    """What podman must receive for `mount`: `%h` expanded by systemd (shown as <EXPANDED>), the rest
    literal; a named volume by its podman name."""
    if mount.is_named_volume:
        source = Names(profile.name).volume(mount.source)
    elif mount.source.startswith("~"):
        source = "<EXPANDED>" + mount.source[1:]
    else:
        source = mount.source
    return str(Mount(source, mount.target, mount.options))


def assert_every_field_arrives(profile: Profile, units: dict[str, str]) -> None:
    """Every field of every service reaches podman's (or systemd's) command line as the profile says."""
    names = Names(profile.name)
    pod_words = [
        w
        for line in units[names.pod_unit].splitlines()
        if line.startswith(("ExecStart=", "ExecStartPre="))
        for w in exec_start_words_of(line)
    ]
    published = flag_values(pod_words, "--publish") + flag_values(pod_words, "-p")
    for port in profile.pod.ports:
        ip = port.host_ip or profile.pod.bind
        assert f"{f'[{ip}]' if ':' in ip else ip}:{replace(port, host_ip=None)}" in published, published
    for name, svc in profile.services.items():
        unit = units[names.service_unit(name)]
        words = exec_start_words(unit)
        assert flag_values(words, "--name") == [names.container(name)]
        for key, value in svc.env.items():
            assert f"{key}={value}" in flag_values(words, "--env"), (key, value, words)
        if svc.command:
            assert words[-len(svc.command) :] == list(svc.command)
        assert svc.image in words
        assert flag_values(words, "-v") == [expected_mount(profile, m) for m in svc.volumes], words
        assert sorted(flag_values(words, "--secret")) == sorted(
            f"{names.secret(s)},type=env,target={env}" for env, s in svc.secrets.items()
        )
        devices = flag_values(words, "--device")
        if svc.gpus is None:
            assert devices == []
        else:
            assert devices and all(d.startswith("nvidia.com/gpu=") for d in devices), devices
        if svc.resources:
            assert flag_values(words, "--cpus") == [f"{svc.resources.cpus:g}"]
            assert flag_values(words, "--memory") == [str(svc.resources.memory)]
            assert flag_values(words, "--pids-limit") == [str(svc.resources.pids)]
        assert sorted(flag_values(words, "--label")) == [
            f"io.sparc-agent.service={name}",
            f"io.sparc-agent.stack={profile.name}",
        ]
        for dep in svc.depends_on:
            assert names.service_unit(dep) in unit_lines(unit, "Wants")
            assert names.service_unit(dep) in unit_lines(unit, "After")
        assert unit_lines(unit, "Restart") == [svc.restart.policy]


NASTY = [
    "${HOME}",
    "$HOME",
    "$$",
    "%h",
    "%%",
    "100%",
    'say "hi"',
    "it's",
    "back\\slash",
    "\\n",
    " pad ",
    "a;b",
    "{}",
    "~",
]


@pytest.mark.parametrize("podman", ["4.4", "5.4"])
def test_nasty_values_arrive_literally(podman: str, tmp_path: Path) -> None:
    doc = {
        "apiVersion": "sparc-agent/v1",
        "name": "nasty",
        "services": {
            "a": {
                "image": "localhost/a:1",
                "env": {f"V{i}": v for i, v in enumerate(NASTY)},
                "command": NASTY,
            }
        },
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    units, _ = generate(render(load_profile(str(path)).profile, Target.for_podman(podman)), tmp_path / "w")
    words = exec_start_words(units["nasty-a.service"])
    assert words[-len(NASTY) :] == NASTY
    for i, value in enumerate(NASTY):
        assert f"V{i}={value}" in words


@pytest.mark.parametrize(
    ("podman", "quadlet", "fallback"),
    [("4.3", "5.4", True), ("5.4", "4.6", True), ("4.4", "4.8", False), ("5.4", "5.4", False)],
)
def test_volume_driver_and_options_fall_back_to_a_unit_of_ours(
    podman: str, quadlet: str, fallback: bool, tmp_path: Path
) -> None:
    # .volume needs quadlet >= 4.8 (VolumeName=) and podman >= 4.4 (volume create --ignore); below either,
    # a plain unit creates the volume with its driver and options (podman has had both for years)
    doc = {
        "apiVersion": "sparc-agent/v1",
        "name": "s",
        "volumes": {
            "data": {"driver": "local", "options": {"type": "tmpfs", "device": "tmpfs", "o": "nodev"}}
        },
        "services": {"web": {"image": "localhost/web:1", "volumes": ["data:/data", "plain:/plain"]}},
    }
    doc["volumes"]["plain"] = {}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    target = Target(podman=Version.parse(podman), quadlet=Version.parse(quadlet))
    files = render(load_profile(str(path)).profile, target)
    units, _ = generate(files, tmp_path / "w")
    web = units["s-web.service"]
    assert ("containers/systemd/s-data.volume" in files) is not fallback
    if fallback:
        volume = units["s-data-volume.service"]
        create = exec_start_words_of(next(ln for ln in volume.splitlines() if ln.startswith("ExecStart=-")))
        assert create[:3] == ["-/usr/bin/podman", "volume", "create"]
        assert create[3:] == [
            "--driver", "local", "--opt", "device=tmpfs", "--opt", "o=nodev", "--opt", "type=tmpfs",
            "--label", "io.sparc-agent.stack=s", "s-data",
        ]  # fmt: skip
        assert "Requires=s-data-volume.service" in web and "After=s-data-volume.service" in web
        assert "s-plain-volume.service" not in units  # no driver or options: podman creates it on first use
    else:
        assert "Driver=local" in files["containers/systemd/s-data.volume"]
    verify(units, tmp_path / "w")
