"""The few podman commands apply needs that quadlet does not run: images and secrets."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from sparc_agent.errors import EnvironmentProblem, InvalidInput
from sparc_agent.host.process import Done, run, spawn


class ImageUnavailable(EnvironmentProblem):
    """An image is neither present nor pullable; nothing was changed."""


def podman_path() -> str:
    path = shutil.which("podman")
    if path is None:
        raise EnvironmentProblem("podman is not installed (or not on PATH): install podman >= 4.4")
    return path


def _run(*args: str, stdin: bytes | None = None, timeout: float = 120) -> Done:
    return run([podman_path(), *args], input=stdin, timeout=timeout)


def image_present(image: str) -> bool:
    return _run("image", "exists", image).returncode == 0


def missing_images(images: Iterable[str]) -> list[str]:
    """The images not in local storage: one podman call when all are there (the usual case)."""
    wanted = list(dict.fromkeys(images))
    if not wanted or _run("image", "inspect", "--format", "{{.Id}}", *wanted).returncode == 0:
        return []
    return [image for image in wanted if not image_present(image)]


async def pull_missing(images: Iterable[str], log: TextIO = sys.stderr) -> list[str]:
    """Pull every image not present, one at a time, with podman's progress on stderr.

    Done before any unit starts: a 20 GB image must not eat a unit's start timeout.
    """
    missing = missing_images(images)
    await pull(missing, log)
    return missing


async def pull(images: Iterable[str], log: TextIO = sys.stderr) -> None:
    """Pull these images, one at a time, with podman's progress on stderr."""
    for image in images:
        print(f"pulling {image} (not present locally)...", file=log, flush=True)
        proc = await spawn([podman_path(), "pull", image], stdout="null")
        last = ""
        assert proc.stderr is not None
        async for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                last = line
                print(f"  {image}: {line}", file=log, flush=True)
        if await proc.wait() != 0:
            raise ImageUnavailable(f"cannot pull image {image}: {last or 'podman pull failed'}")


# ---------------------------------------------------------------- secrets


def secret_value(name: str, file: str | None, env_var: str | None) -> bytes:
    """The secret's bytes, from its file or the applying user's environment. Never logged."""
    if file is not None:
        path = Path(file).expanduser()
        try:
            return path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"secrets.{name}.file: cannot read {path}: {exc.strerror}") from None
    assert env_var is not None
    value = os.environ.get(env_var)
    if value is None:
        raise InvalidInput(f"secrets.{name}.env: ${env_var} is not set in the environment of this command")
    return value.encode()


def fingerprint(salt: bytes, value: bytes) -> str:
    """A keyed hash, so the state directory reveals nothing about a short secret."""
    return hmac.new(salt, value, hashlib.sha256).hexdigest()


def secret_exists(name: str) -> bool:
    return _run("secret", "inspect", name).returncode == 0


def missing_secrets(names: Iterable[str]) -> set[str]:
    """Podman secrets that do not exist: one podman call when all do."""
    wanted = list(dict.fromkeys(names))
    if not wanted or _run("secret", "inspect", "--format", "{{.ID}}", *wanted).returncode == 0:
        return set()
    if len(wanted) == 1:
        return set(wanted)
    return {name for name in wanted if not secret_exists(name)}


def put_secret(name: str, value: bytes, exists: bool) -> None:
    """(Re)create podman secret `name` from stdin: the value never appears in argv."""
    if exists:
        _run("secret", "rm", name)
    done = _run("secret", "create", name, "-", stdin=value)
    if done.returncode != 0:
        raise EnvironmentProblem(f"podman secret create {name} failed: {done.stderr.strip()}")


def remove_secret(name: str) -> None:
    _run("secret", "rm", name)
