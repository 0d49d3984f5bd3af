"""Layering of a profile: base file, `-f` overlays, then `--set key=value`.

Later layers win; mappings are merged key by key, lists and scalars replaced
(the docker compose rule). The source map follows the winner of each path.
"""

from __future__ import annotations

from typing import Any

from sparc_agent.profile.source import Location, Path, SourceMap, YamlError, load_yaml


def merge(base: Any, base_map: SourceMap, top: Any, top_map: SourceMap, under: Path = ()) -> Any:
    """Merge `top` over `base`; `base_map` is updated to point at the winners."""
    if isinstance(base, dict) and isinstance(top, dict):
        out = dict(base)
        for key, value in top.items():
            child = (*under, key)
            if key in out:
                out[key] = merge(out[key], base_map, value, top_map, child)
            else:
                out[key] = value
                _take_subtree(base_map, top_map, child)
        return out
    _drop_subtree(base_map, under)
    _take_subtree(base_map, top_map, under)
    return top


def _take_subtree(dst: SourceMap, src: SourceMap, root: Path) -> None:
    n = len(root)
    for table_name in ("locations", "surprises"):
        src_table = getattr(src, table_name)
        dst_table = getattr(dst, table_name)
        for p, v in src_table.items():
            if p[:n] == root:
                dst_table[p] = v


def _drop_subtree(smap: SourceMap, root: Path) -> None:
    n = len(root)
    for table in (smap.locations, smap.surprises):
        for p in [p for p in table if p[:n] == root and len(p) > n]:
            del table[p]
        table.pop(root, None)


def parse_set(expr: str) -> tuple[Any, SourceMap]:
    """`services.mas.env.LOG_LEVEL=debug` -> a nested document and its source map.

    The value is read as YAML, so `--set services.unity.gpus=2` gives a number and
    `--set 'services.x.command=[a, b]'` a list.
    """
    # the flag may carry control characters: never echo them raw into a terminal
    label = "--set " + expr.encode("unicode_escape").decode("ascii")
    key, sep, raw = expr.partition("=")
    parts = tuple(key.split("."))
    if not sep or not key or any(not p for p in parts):
        raise YamlError(Location(label, None), (), "expected --set path.to.key=value")
    try:
        value, vmap = load_yaml(raw, label) if raw.strip() else ("", SourceMap())
    except YamlError as exc:
        raise YamlError(exc.location, parts, exc.message) from None
    doc: Any = value
    for part in reversed(parts):
        doc = {part: doc}
    smap = SourceMap()
    loc = Location(label, None)
    for i in range(len(parts) + 1):
        smap.locations[parts[:i]] = loc
    for p in vmap.locations:
        smap.locations[parts + p] = loc
    for p, hint in vmap.surprises.items():
        smap.surprises[parts + p] = hint
    return doc, smap
