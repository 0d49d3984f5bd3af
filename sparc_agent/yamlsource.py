"""Safe YAML loading that remembers where every key came from.

PyYAML's own loaders lose line numbers, accept duplicate keys and expand alias
bombs. We compose the node graph ourselves (after a cheap event pre-scan that
bounds nesting), build plain Python values, and record `path -> (file, line)`
so that every validation error can name the line it is about.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

# values that aliases may add on top of the document's own nodes (a "billion laughs"
# bomb is small text that expands hugely; big honest documents are capped by size instead)
MAX_ALIAS_VALUES = 10_000
MAX_DEPTH = 100

Path = tuple[str | int, ...]

# libyaml's parser is ~9x faster; its nodes carry the same marks and resolved tags
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TRUE_FALSE = {"true", "false"}
_INT_TAG = "tag:yaml.org,2002:int"
_STR_TAG = "tag:yaml.org,2002:str"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_MERGE_TAG = "tag:yaml.org,2002:merge"


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
    _prescan(text, filename)
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise YamlError(Location(filename, line), (), f"not valid YAML: {problem}") from None
    smap = SourceMap()
    smap.locations[()] = Location(filename, 1)
    if node is None:
        return None, smap
    builder = _Builder(filename, smap)
    return builder.build(node, (), 0), smap


def _prescan(text: str, filename: str) -> None:
    """Refuse documents that nest too deep before PyYAML's recursive composer sees them."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    line = event.start_mark.line + 1 if event.start_mark else None
                    raise YamlError(
                        Location(filename, line), (), f"nesting deeper than {MAX_DEPTH} levels is refused"
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise YamlError(Location(filename, line), (), f"not valid YAML: {problem}") from None


class _Builder:
    def __init__(self, filename: str, smap: SourceMap) -> None:
        self.filename = filename
        self.smap = smap
        self.count = 0
        self.distinct: set[int] = set()
        self.scalars = yaml.SafeLoader("")  # only its scalar constructors are used

    def _loc(self, node: yaml.Node) -> Location:
        return Location(self.filename, node.start_mark.line + 1)

    def build(self, node: yaml.Node, path: Path, depth: int) -> Any:
        self.count += 1
        self.distinct.add(id(node))
        if self.count - len(self.distinct) > MAX_ALIAS_VALUES:
            raise YamlError(
                self._loc(node), path, f"aliases expand to more than {MAX_ALIAS_VALUES} values (alias bomb?)"
            )
        if depth > MAX_DEPTH:
            raise YamlError(self._loc(node), path, f"nesting deeper than {MAX_DEPTH} levels is refused")
        self.smap.locations.setdefault(path, self._loc(node))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        return self._scalar(node, path)

    def _scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        if node.tag == _STR_TAG:
            return node.value  # the common case, without the constructor's bookkeeping
        value = self.scalars.construct_object(node, deep=True)
        raw = str(node.value)
        if node.tag == _INT_TAG and ":" in raw:
            self.smap.surprises[path] = (
                f'YAML 1.1 reads unquoted {raw} as the base-60 number {value}: quote it ("{raw}")'
            )
        elif node.tag == _BOOL_TAG and raw.lower() not in _TRUE_FALSE:
            self.smap.surprises[path] = (
                f'YAML 1.1 reads unquoted {raw} as the boolean {str(value).lower()}: quote it ("{raw}")'
            )
        if isinstance(value, float) and not math.isfinite(value):
            return raw  # .inf/.nan are never meant as numbers in a profile
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        explicit: set[Any] = set()
        merged: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.update(self._merge_sources(value_node, path, depth))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlError(self._loc(key_node), path, "mapping keys must be plain strings")
            key = key_node.value if key_node.tag == _STR_TAG else self.scalars.construct_object(key_node)
            if not isinstance(key, str):
                # keys like `yes:` or `8000:` are YAML 1.1 surprises, never meant
                key = str(key_node.value)
            child = (*path, key)
            if key in explicit:
                first = self.smap.locations.get(child)
                where = f" (first at line {first.line})" if first and first.line else ""
                raise YamlError(self._loc(key_node), child, f"duplicate key{where}")
            explicit.add(key)
            self.smap.locations[child] = self._loc(key_node)
            result[key] = self.build(value_node, child, depth + 1)
        # `<<: *defaults`: explicit keys win over merged ones, as YAML specifies
        return {**{k: v for k, v in merged.items() if k not in explicit}, **result}

    def _merge_sources(self, node: yaml.Node, path: Path, depth: int) -> dict[Any, Any]:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged: dict[Any, Any] = {}
        for src in reversed(sources):  # earlier sources win
            if not isinstance(src, yaml.MappingNode):
                raise YamlError(self._loc(src), path, "`<<` merges mappings only")
            merged.update(self._mapping(src, path, depth + 1))
        return merged
