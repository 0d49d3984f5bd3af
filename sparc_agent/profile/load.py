"""Load a profile: YAML layers -> merged document -> validated `Profile`.

Every problem becomes a `Problem` that names file, line and key path; the CLI
prints them as `FILE:LINE: path.to.key: message` and exits 2.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

import pydantic
from pydantic import BaseModel

from sparc_agent.errors import InvalidInput
from sparc_agent.profile import rules as checks
from sparc_agent.profile.layers import merge, parse_set
from sparc_agent.profile.model import Profile
from sparc_agent.profile.scalars import ItemError
from sparc_agent.profile.source import Location, Path, SourceMap, YamlError, load_yaml

MAX_PROFILE_BYTES = 1 << 20


@dataclass(frozen=True)
class Problem:
    location: Location
    path: Path
    message: str

    def __str__(self) -> str:
        key = format_path(self.path) or "(document)"
        return f"{self.location}: {key}: {self.message}"


class ProfileInvalid(InvalidInput):
    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class LoadedProfile:
    profile: Profile
    document: Any  # the merged YAML document the profile was validated from
    sources: SourceMap
    warnings: tuple[Problem, ...]
    files: tuple[str, ...]

    @property
    def digest(self) -> str:
        return profile_digest(self.profile)


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def profile_digest(profile: Profile) -> str:
    """Hash of the validated profile, independent of YAML formatting and comments."""
    canonical = json.dumps(profile.model_dump(mode="json", by_alias=True), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_profile(path: str, overlays: Sequence[str] = (), sets: Sequence[str] = ()) -> LoadedProfile:
    try:
        doc, smap = _read(path)
        for overlay in overlays:
            top, top_map = _read(overlay)
            doc = merge(doc, smap, top, top_map)
        for expr in sets:
            top, top_map = parse_set(expr)
            doc = merge(doc, smap, top, top_map)
    except YamlError as exc:
        raise ProfileInvalid([Problem(exc.location, exc.path, exc.message)]) from None
    if doc is None:
        raise ProfileInvalid(
            [Problem(smap.locate(()), (), "the profile is empty (expected apiVersion, name and services)")]
        )
    if not isinstance(doc, dict):
        raise ProfileInvalid([Problem(smap.locate(()), (), "a profile must be a mapping of keys")])
    try:
        profile = Profile.model_validate(doc)
    except pydantic.ValidationError as exc:
        raise ProfileInvalid(_translate(exc, smap)) from None
    problems = [Problem(smap.locate(p), p, hint) for p, hint in smap.surprises.items() if not _meant(p)]
    problems += [Problem(smap.locate(f.path), f.path, f.message) for f in checks.errors(profile)]
    if problems:
        raise ProfileInvalid(sorted(problems, key=_by_line))
    warnings = tuple(Problem(smap.locate(f.path), f.path, f.message) for f in checks.warnings(profile))
    return LoadedProfile(profile, doc, smap, warnings, (path, *overlays))


def _meant(path: Path) -> bool:
    """YAML 1.1 surprises whose meaning is clear: `policy: no` (read as false) means `no`."""
    return len(path) == 4 and path[0] == "services" and path[2:] == ("restart", "policy")


def _by_line(problem: Problem) -> tuple[str, int]:
    return problem.location.file, problem.location.line or 0


def _read(path: str) -> tuple[Any, SourceMap]:
    try:
        raw = FsPath(path).read_bytes()[: MAX_PROFILE_BYTES + 1]
    except OSError as exc:
        raise YamlError(Location(path, None), (), f"cannot read: {exc.strerror}") from None
    if len(raw) > MAX_PROFILE_BYTES:
        raise YamlError(Location(path, None), (), f"larger than {MAX_PROFILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise YamlError(
            Location(path, line), (), f"not UTF-8 (byte {exc.start}: {raw[exc.start]:#04x})"
        ) from None
    return load_yaml(text, path)


# ---------------------------------------------------------------- pydantic errors -> problems

_PLAIN = {
    "missing": "required key is missing",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "string_type": "expected a string",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "too_short": "must not be empty",
}
_BOUNDS = {
    "less_than_equal": "at most",
    "less_than": "less than",
    "greater_than_equal": "at least",
    "greater_than": "greater than",
}


def _translate(exc: pydantic.ValidationError, smap: SourceMap) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[Path] = set()
    for err in exc.errors(include_url=False):
        path = _clean_loc(err["loc"])
        item = err.get("ctx", {}).get("error")
        if isinstance(item, ItemError):  # the validator named the item at fault, below its own key
            path = (*path, item.key)
        if path in seen:  # one message per key is enough
            continue
        seen.add(path)
        etype = err["type"]
        if etype == "extra_forbidden":
            message = _unknown_key(path)
        elif etype == "value_error":
            message = str(err["msg"]).removeprefix("Value error, ")
        elif etype == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            message = f"invalid value (allowed: {expected.replace(chr(39), '')})"
        elif etype in _PLAIN:
            message = _PLAIN[etype]
        elif etype in _BOUNDS:
            message = f"must be {_BOUNDS[etype]} {next(iter(err.get('ctx', {}).values()), '')}"
        else:
            message = str(err["msg"])
        hint = smap.surprises.get(path)
        if hint:
            message = f"{message}; {hint}"
        problems.append(Problem(smap.locate(path), path, message))
    return sorted(problems, key=_by_line)


def _clean_loc(loc: tuple[int | str, ...]) -> Path:
    # pydantic inserts validator names such as 'function-before[...]' into loc
    out: list[str | int] = []
    for part in loc:
        if part == "[key]" or (
            isinstance(part, str) and part.startswith(("function-", "union[")) and "[" in part
        ):
            continue
        out.append("apiVersion" if part == "api_version" else part)
    return tuple(out)


def _unknown_key(path: Path) -> str:
    key = str(path[-1])
    allowed = _allowed_keys(path[:-1])
    if not allowed:
        return "unknown key"
    hint = ""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        hint = f"; did you mean {close[0]!r}?"
    elif key == "ports" and len(path) == 3 and path[0] == "services":
        hint = "; ports are published by the pod: use pod.ports"
    return f"unknown key {key!r} (allowed: {', '.join(allowed)}){hint}"


def _allowed_keys(path: Path) -> list[str]:
    """Keys the model accepts at `path` (for 'did you mean')."""
    current: Any = Profile
    for part in path:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            name = "api_version" if part == "apiVersion" else part
            field = current.model_fields.get(str(name))
            if field is None:
                return []
            current = field.annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        elif typing.get_origin(current) is tuple:
            current = typing.get_args(current)[0]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else args[0]
        else:
            return tp
