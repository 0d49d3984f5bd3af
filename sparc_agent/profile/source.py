"""Safe YAML loading that remembers where every key came from.

PyYAML's own loaders lose line numbers, accept duplicate keys and expand alias
bombs. We build plain Python values straight from the parser's event stream, in
one pass that bounds nesting and alias expansion before anything large or deep
exists (libyaml's composer recurses in C and crashes on very deep input), and
record `path -> (file, line)` so that every validation error can name its line.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

# values that aliases may add on top of the document's own nodes (a "billion laughs"
# bomb is small text that expands hugely; big honest documents are capped by size instead)
MAX_ALIAS_VALUES = 10_000
MAX_DEPTH = 100
_TOO_DEEP = f"nesting deeper than {MAX_DEPTH} levels is refused"

Path = tuple[str | int, ...]

# libyaml's parser is ~9x faster than PyYAML's; its events carry the same marks
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TRUE_FALSE = {"true", "false"}
_INT_TAG = "tag:yaml.org,2002:int"
_STR_TAG = "tag:yaml.org,2002:str"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_YAML_TAG = "tag:yaml.org,2002:"
# explicit tags a profile may carry (`!!str 8000`); any other (`!!python/object`, `!foo`) is refused
_PLAIN_TAGS = {"!", *(f"{_YAML_TAG}{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq"))}


@dataclass(frozen=True)
class Location:
    file: str
    line: int | None  # 1-based; None for values that came from --set

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@dataclass
class SourceMap:
    """Where each path of a (merged) document was last written."""

    locations: dict[Path, Location] = field(default_factory=dict)
    # YAML 1.1 surprises seen at a path: the raw text, for error hints
    surprises: dict[Path, str] = field(default_factory=dict)

    def locate(self, path: Iterable[str | int]) -> Location:
        """The location of `path`, or of its nearest ancestor that has one."""
        p = tuple(path)
        while p:
            if p in self.locations:
                return self.locations[p]
            p = p[:-1]
        return self.locations.get((), Location("<profile>", None))

    def update(self, other: SourceMap, under: Path = ()) -> None:
        for p, loc in other.locations.items():
            self.locations[under + p] = loc
        for p, raw in other.surprises.items():
            self.surprises[under + p] = raw


class YamlError(Exception):
    """A document that is not acceptable YAML for a profile."""

    def __init__(self, location: Location, path: Path, message: str) -> None:
        super().__init__(message)
        self.location = location
        self.path = path
        self.message = message


def load_yaml(text: str, filename: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document into plain values and a source map."""
    smap = SourceMap()
    smap.locations[()] = Location(filename, 1)
    builder = _Builder(filename, smap)
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            builder.feed(event)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        if "nesting depth" in problem:  # PyYAML >= 6.0.4's scanner stops flow nesting past ~1000 first
            raise YamlError(Location(filename, line), (), _TOO_DEEP) from None
        raise YamlError(Location(filename, line), (), f"not valid YAML: {problem}") from None
    return builder.result, smap


_MERGE = object()  # the pending key of a mapping whose next value is a `<<` merge source


@dataclass
class _Frame:
    path: Path
    value: Any  # the list or dict being filled
    anchor: str | None
    start_count: int  # values built before this collection began (for the anchor's size)
    key: Any = None  # mappings: the key waiting for its value (None: expecting a key)
    explicit: set[Any] = field(default_factory=set)
    merged: dict[Any, Any] = field(default_factory=dict)
    merge_at: Location | None = None  # where the pending `<<` key was written


@dataclass(frozen=True)
class _Anchored:
    value: Any
    locations: dict[Path, Location]  # relative to the anchored node
    surprises: dict[Path, str]
    size: int  # values it expands to


class _Builder:
    def __init__(self, filename: str, smap: SourceMap) -> None:
        self.filename = filename
        self.smap = smap
        self.stack: list[_Frame] = []
        self.anchors: dict[str, _Anchored] = {}
        self.count = 0  # values built, aliases included
        self.alias_values = 0
        self.documents = 0
        self.result: Any = None
        self.resolver = yaml.resolver.Resolver()
        self.scalars = yaml.SafeLoader("")  # only its scalar constructors are used

    def _loc(self, event: yaml.Event) -> Location:
        mark = event.start_mark
        return Location(self.filename, mark.line + 1 if mark is not None else None)

    def feed(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise YamlError(self._loc(event), (), "expected one YAML document, found more (`---`)")
        elif isinstance(event, yaml.ScalarEvent):
            self._scalar(event)
        elif isinstance(event, yaml.AliasEvent):
            self._alias(event)
        elif isinstance(event, yaml.CollectionStartEvent):
            self._start(event)
        elif isinstance(event, yaml.CollectionEndEvent):
            frame = self.stack.pop()
            value = frame.value
            if isinstance(value, dict):  # `<<: *defaults`: explicit keys win over merged ones
                value = {**{k: v for k, v in frame.merged.items() if k not in frame.explicit}, **value}
            self._done(value, frame.path, frame.anchor, self.count - frame.start_count)

    # ---------------------------------------------------------------- where a new node goes

    def _child_path(self, event: yaml.Event, is_scalar: bool) -> Path | None:
        """The path of the node `event` starts; None when it is a mapping key."""
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.value, list):
            return (*top.path, len(top.value))
        if top.key is None:
            if not is_scalar:
                raise YamlError(self._loc(event), top.path, "mapping keys must be plain strings")
            return None
        return top.path if top.key is _MERGE else (*top.path, top.key)

    def _count(self, event: yaml.Event, path: Path, extra: int = 1) -> None:
        self.count += extra
        if self.alias_values > MAX_ALIAS_VALUES:
            raise YamlError(
                self._loc(event), path, f"aliases expand to more than {MAX_ALIAS_VALUES} values (alias bomb?)"
            )

    def _start(self, event: yaml.CollectionStartEvent) -> None:
        path = self._child_path(event, is_scalar=False)
        assert path is not None
        self._check_tag(event, path)
        if len(self.stack) >= MAX_DEPTH:
            raise YamlError(self._loc(event), path, _TOO_DEEP)
        self._count(event, path)
        self.smap.locations.setdefault(path, self._loc(event))
        value: Any = {} if isinstance(event, yaml.MappingStartEvent) else []
        self.stack.append(_Frame(path, value, event.anchor, self.count - 1))

    def _scalar(self, event: yaml.ScalarEvent) -> None:
        path = self._child_path(event, is_scalar=True)
        self._check_tag(event, self.stack[-1].path if path is None else path)
        tag = event.tag if event.tag not in (None, "!") else self._resolve(event)
        if path is None:  # a mapping key
            self._key(event, tag)
            return
        self._count(event, path)
        self.smap.locations.setdefault(path, self._loc(event))
        self._done(self._construct(event, tag, path), path, event.anchor, 1)

    def _check_tag(self, event: yaml.NodeEvent, path: Path) -> None:
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in _PLAIN_TAGS:
            short = "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else tag
            raise YamlError(
                self._loc(event), path, f"unknown YAML tag {short} (a profile is plain YAML: no tags)"
            )

    def _resolve(self, event: yaml.ScalarEvent) -> str:
        resolve: Callable[..., str] = self.resolver.resolve  # untyped in types-PyYAML
        return resolve(yaml.ScalarNode, event.value, event.implicit)

    def _key(self, event: yaml.ScalarEvent, tag: str) -> None:
        top = self.stack[-1]
        if tag == _MERGE_TAG:
            top.key, top.merge_at = _MERGE, self._loc(event)
            return
        key = event.value if tag == _STR_TAG else self._construct(event, tag, None)
        if not isinstance(key, str):
            key = str(event.value)  # keys like `yes:` or `8000:` are YAML 1.1 surprises, never meant
        child = (*top.path, key)
        if key in top.explicit:
            first = self.smap.locations.get(child)
            where = f" (first at line {first.line})" if first and first.line else ""
            raise YamlError(self._loc(event), child, f"duplicate key{where}")
        top.explicit.add(key)
        top.key = key
        self.smap.locations[child] = self._loc(event)

    def _construct(self, event: yaml.ScalarEvent, tag: str, path: Path | None) -> Any:
        if tag == _STR_TAG:
            return event.value  # the common case, without the constructor's bookkeeping
        node = yaml.ScalarNode(tag, event.value, style=event.style)  # marks only serve PyYAML's messages
        value = self.scalars.construct_object(node, deep=True)
        raw = str(event.value)
        if path is not None and tag == _INT_TAG and ":" in raw:
            self.smap.surprises[path] = (
                f'YAML 1.1 reads unquoted {raw} as the base-60 number {value}: quote it ("{raw}")'
            )
        elif path is not None and tag == _BOOL_TAG and raw.lower() not in _TRUE_FALSE:
            self.smap.surprises[path] = (
                f'YAML 1.1 reads unquoted {raw} as the boolean {str(value).lower()}: quote it ("{raw}")'
            )
        if isinstance(value, float) and not math.isfinite(value):
            return raw  # .inf/.nan are never meant as numbers in a profile
        return value

    def _alias(self, event: yaml.AliasEvent) -> None:
        path = self._child_path(event, is_scalar=False)
        assert path is not None
        anchored = self.anchors.get(event.anchor or "")
        if anchored is None:
            raise YamlError(self._loc(event), path, f"unknown or recursive alias *{event.anchor}")
        self.alias_values += anchored.size
        self._count(event, path, anchored.size)
        for rel, loc in anchored.locations.items():
            self.smap.locations.setdefault(path + rel, loc)
        for rel, hint in anchored.surprises.items():
            self.smap.surprises[path + rel] = hint
        self._done(copy.deepcopy(anchored.value), path, None, anchored.size)

    # ---------------------------------------------------------------- a node is complete

    def _done(self, value: Any, path: Path, anchor: str | None, size: int) -> None:
        if anchor:
            n = len(path)
            self.anchors[anchor] = _Anchored(
                value,
                {p[n:]: loc for p, loc in self.smap.locations.items() if p[:n] == path},
                {p[n:]: h for p, h in self.smap.surprises.items() if p[:n] == path},
                size,
            )
        if not self.stack:
            self.result = value
            return
        top = self.stack[-1]
        if isinstance(top.value, list):
            top.value.append(value)
        elif top.key is _MERGE:
            sources = value if isinstance(value, list) else [value]
            if not all(isinstance(src, dict) for src in sources):
                raise YamlError(top.merge_at or self.smap.locate(path), path, "`<<` merges mappings only")
            # the YAML merge spec: with a list, earlier sources win (PyYAML 6.0.4 lets later
            # ones win; a profile's meaning must not change with a dependency's patch release)
            for src in reversed(sources):
                top.merged.update(src)
            top.key = None
        else:
            top.value[top.key] = value
            top.key = None
