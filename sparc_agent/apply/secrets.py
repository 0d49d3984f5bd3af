"""Podman secrets of a stack: which changed (by salted fingerprint), and putting them in place."""

from __future__ import annotations

import secrets as pysecrets
from dataclasses import dataclass
from typing import TextIO

from sparc_agent.errors import SparcError
from sparc_agent.host import podman
from sparc_agent.profile.model import Profile
from sparc_agent.render import Names
from sparc_agent.state.files import read_or_create
from sparc_agent.state.generations import Generation, ensure_private_dir
from sparc_agent.state.inputs import Inputs, now_us
from sparc_agent.state.paths import PRIVATE_FILE_MODE, StackPaths


@dataclass(frozen=True)
class SecretUpdates:
    fingerprints: dict[str, str]  # every declared secret
    values: dict[str, bytes]  # those that changed or are missing in podman
    absent: set[str]  # podman secret names that do not exist yet


def salt(paths: StackPaths) -> bytes:
    ensure_private_dir(paths.root)
    return read_or_create(paths.salt, lambda: pysecrets.token_bytes(32), PRIVATE_FILE_MODE)


def absent_secrets(profile: Profile) -> set[str]:
    """The stack's podman secrets that do not exist (one podman call when all do)."""
    names = Names(profile.name)
    return podman.missing_secrets(names.secret(n) for n in profile.secrets)


def secret_updates(
    profile: Profile, paths: StackPaths, current: Generation | None, absent: set[str]
) -> SecretUpdates:
    """`absent`: absent_secrets(profile), asked before (it runs beside other start-up work)."""
    names = Names(profile.name)
    key = salt(paths)
    fingerprints: dict[str, str] = {}
    changed: dict[str, bytes] = {}
    before = current.secrets if current else {}
    for name, decl in profile.secrets.items():
        value = podman.secret_value(name, decl.file, decl.env)
        fingerprints[name] = podman.fingerprint(key, value)
        if before.get(name) != fingerprints[name] or names.secret(name) in absent:
            changed[name] = value
    return SecretUpdates(fingerprints, changed, absent)


def put_secrets(profile: Profile, updates: SecretUpdates, paths: StackPaths) -> None:
    """Replace the changed secrets, and record when (state.inputs: their consumers started before
    that run the old value, even if this apply is killed before it restarts them)."""
    names = Names(profile.name)
    inputs = Inputs.read(paths.inputs)
    for name, value in updates.values.items():
        podman.put_secret(names.secret(name), value, exists=names.secret(name) not in updates.absent)
        inputs.put(name, updates.fingerprints[name], now_us())
    for name, fingerprint in updates.fingerprints.items():
        if name not in updates.values:
            inputs.put(name, fingerprint, None)
    inputs.write(paths.inputs)


def restore_secrets(profile: Profile, paths: StackPaths, generation: Generation, log: TextIO) -> None:
    """Put back the secret values `generation` ran with (its consumers then count as stale and
    restart). sparc-agent never keeps secret values, so a value comes from its source again: possible
    while the source still holds it, said plainly when it does not."""
    names = Names(profile.name)
    key = salt(paths)
    inputs = Inputs.read(paths.inputs)
    for name, decl in profile.secrets.items():
        wanted = generation.meta.secrets.get(name)
        held = inputs.secrets.get(name)
        if held is not None and held.digest == wanted:
            continue  # podman holds that value already
        try:
            value: bytes | None = podman.secret_value(name, decl.file, decl.env)
        except SparcError:
            value = None
        if value is None or podman.fingerprint(key, value) != wanted:
            source = decl.file or f"${decl.env}"
            print(
                f"cannot restore secret {name} of generation {generation.number}: its source {source}"
                " no longer holds that value (sparc-agent never keeps secret values);"
                " its consumers keep the current one",
                file=log,
                flush=True,
            )
            continue
        podman.put_secret(
            names.secret(name),
            value,
            exists=names.secret(name) not in podman.missing_secrets([names.secret(name)]),
        )
        inputs.put(name, wanted, now_us())
        print(f"restored secret {name} of generation {generation.number}", file=log, flush=True)
    inputs.write(paths.inputs)
