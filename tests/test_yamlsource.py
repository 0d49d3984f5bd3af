"""The YAML loader: values as PyYAML's safe loader builds them, plus lines, and refusals."""

from __future__ import annotations

import pytest
import yaml

from sparc_agent.profile.source import MAX_ALIAS_VALUES, YamlError, load_yaml

pytestmark = pytest.mark.unit

DOC = """\
defaults: &defaults
  image: localhost/x:1
  env: {A: "1"}
services:
  a:
    <<: *defaults
    env: {B: "2"}
  b:
    <<: [*defaults, {image: other, gpus: 2}]
  c: [*defaults, 3, 'x', 1.5, null, true]
"""


def test_values_match_pyyaml_safe_load() -> None:
    # the oracle only where PyYAML's versions agree with the spec: no list merges here
    doc = DOC.replace("<<: [*defaults, {image: other, gpus: 2}]", "<<: *defaults\n    image: other")
    value, _ = load_yaml(doc, "p.yaml")
    assert value == yaml.safe_load(doc)


def test_merge_list_earlier_source_wins_as_the_spec_says() -> None:
    # PyYAML 6.0.3 agrees; 6.0.4 lets the later mapping win. Ours is pinned to the spec.
    value, _ = load_yaml(DOC, "p.yaml")
    assert value["services"]["b"] == {"image": "localhost/x:1", "env": {"A": "1"}, "gpus": 2}
    assert value["services"]["a"] == {"image": "localhost/x:1", "env": {"B": "2"}}


def test_explicit_keys_win_over_every_merge_source() -> None:
    value, _ = load_yaml(
        "d: &d {x: 1, y: 1}\ne: {y: 2, z: 2}\nm:\n  <<: [*d, {x: 3, w: 3}]\n  x: 9\n", "p.yaml"
    )
    assert value["m"] == {"x": 9, "y": 1, "w": 3}


def test_lines_follow_keys_through_aliases_and_merges() -> None:
    _, smap = load_yaml(DOC, "p.yaml")
    assert smap.locate(("services", "a", "env", "B")).line == 7
    assert smap.locate(("services", "a", "image")).line == 2  # merged from the anchor
    assert smap.locate(("services", "c", 0, "env", "A")).line == 3  # through an alias
    assert smap.locate(("services", "c", 3)).line == 10


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("a: 1\n---\nb: 2\n", "one YAML document", 2),
        ("a: &x [*x]\n", "unknown or recursive alias", 1),
        ("a: *nope\n", "unknown or recursive alias", 1),
        ("a:\n  <<: [1, 2]\n", "merges mappings only", 2),
        ("? [a]\n: 1\n", "plain strings", 1),
        ("a: 1\na: 2\n", "duplicate key (first at line 1)", 2),
    ],
)
def test_refusals_name_their_line(text: str, message: str, line: int) -> None:
    with pytest.raises(YamlError) as err:
        load_yaml(text, "p.yaml")
    assert message in err.value.message and err.value.location.line == line


def test_alias_budget_counts_expansions_not_document_size() -> None:
    big = "items:\n" + "".join(f"  - {{n: {i}}}\n" for i in range(MAX_ALIAS_VALUES * 2))
    load_yaml(big, "big.yaml")  # large but honest: fine
    bomb = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcd", "bcde", strict=True)
    )
    with pytest.raises(YamlError, match="alias bomb"):
        load_yaml(bomb, "bomb.yaml")


def test_very_deep_nesting_is_refused_without_crashing() -> None:
    with pytest.raises(YamlError, match="deeper than 100") as err:
        load_yaml("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "deep.yaml")  # libyaml's composer segfaults
    assert err.value.location.line == 1


@pytest.mark.parametrize("depth", [101, 500, 5000])
def test_nesting_limit_is_ours_whatever_pyyaml_allows(depth: int) -> None:
    with pytest.raises(YamlError, match="nesting deeper than 100 levels is refused"):
        load_yaml("a: " + "[" * depth + "]" * depth + "\n", "deep.yaml")
