"""Worker labels and selectors (shared/labels.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.labels import (
    LabelSelector,
    Op,
    PreferredLabel,
    as_preferences,
    as_selector,
    as_selectors,
    check_label_key,
    label_value,
    normalise_labels,
    parse_selector,
)

# -- values and keys ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (8, "8"),
        (0, "0"),
        (8.0, "8"),
        (2.5, "2.5"),
        ("eu", "eu"),
        ("True", "True"),
    ],
)
def test_label_value(value: Any, text: str) -> None:
    assert label_value(value) == text


def test_normalise_labels() -> None:
    assert normalise_labels({"gpu": True, "cores": 16, "zone": "eu"}) == {
        "gpu": "true",
        "cores": "16",
        "zone": "eu",
    }
    assert normalise_labels(None) == {}


@pytest.mark.parametrize(
    "key", ["zone", "a", "k8s.io/arch", "unique.id", "node-role_x", "A1", "hostname"]
)
def test_label_key_accepted(key: str) -> None:
    assert check_label_key(key) == key


@pytest.mark.parametrize("key", ["", "-zone", "zone-", ".x", "a b", "zone=", "é"])
def test_label_key_refused(key: str) -> None:
    with pytest.raises(ValueError, match="invalid label key"):
        check_label_key(key)


# -- parsing ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "op", "values"),
    [
        ("zone=eu", "zone", Op.EQUALS, ("eu",)),
        ("zone==eu", "zone", Op.EQUALS, ("eu",)),
        (" zone = eu ", "zone", Op.EQUALS, ("eu",)),
        ("gpu=true", "gpu", Op.EQUALS, ("true",)),
        ("zone!=eu", "zone", Op.NOT_IN, ("eu",)),
        ("zone != eu", "zone", Op.NOT_IN, ("eu",)),
        ("zone in (eu, us)", "zone", Op.IN, ("eu", "us")),
        ("zone in (eu,us,ap)", "zone", Op.IN, ("eu", "us", "ap")),
        ("zone in(eu)", "zone", Op.IN, ("eu",)),
        ("zone IN (eu)", "zone", Op.IN, ("eu",)),
        ("tier notin (spot)", "tier", Op.NOT_IN, ("spot",)),
        ("tier notin (spot, preempt)", "tier", Op.NOT_IN, ("spot", "preempt")),
        ("tier not_in (spot)", "tier", Op.NOT_IN, ("spot",)),
        ("tier NotIn (spot)", "tier", Op.NOT_IN, ("spot",)),
        ("ssd", "ssd", Op.EXISTS, ()),
        ("  ssd  ", "ssd", Op.EXISTS, ()),
        ("k8s.io/arch=amd64", "k8s.io/arch", Op.EQUALS, ("amd64",)),
        ("unique.rack in (r1)", "unique.rack", Op.IN, ("r1",)),
    ],
)
def test_parse_selector(text: str, key: str, op: Op, values: tuple[str, ...]) -> None:
    sel = parse_selector(text)
    assert (sel.key, sel.op, sel.values) == (key, op, values)
    assert LabelSelector.parse(text) == sel


@pytest.mark.parametrize("text", ["k foo (a)", "k like (a)", "k has (a, b)", "zone ni (eu)"])
def test_parse_unknown_operator(text: str) -> None:
    with pytest.raises(ValueError, match="unknown selector operator"):
        parse_selector(text)


@pytest.mark.parametrize("text", ["", "=v", "a b", "k=", "k = a b", "k in eu", "(a)", "k < 3"])
def test_parse_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="cannot parse label selector"):
        parse_selector(text)


@pytest.mark.parametrize("text", ["k in ()", "k notin ( , )"])
def test_parse_empty_set_refused(text: str) -> None:
    with pytest.raises(ValueError, match="needs at least one value"):
        parse_selector(text)


@pytest.mark.parametrize("text", ["-k=v", "k-=v", "-k"])
def test_parse_bad_key_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid label key"):
        parse_selector(text)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("zone=eu", "zone=eu"),
        ("zone == eu", "zone=eu"),
        ("zone!=eu", "zone!=eu"),
        ("zone notin (eu, us)", "zone notin (eu, us)"),
        ("zone in (eu,us)", "zone in (eu, us)"),
        ("tier not_in (spot)", "tier!=spot"),
        ("ssd", "ssd"),
    ],
)
def test_selector_str_round_trips(text: str, canonical: str) -> None:
    sel = parse_selector(text)
    assert str(sel) == canonical
    assert parse_selector(str(sel)) == sel


# -- model validation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"key": "k", "op": "bogus"}, "Input should be"),
        ({"key": "k", "op": "like", "values": ("a",)}, "Input should be"),
        ({"key": "k", "op": "exists", "values": ("a",)}, "takes no values"),
        ({"key": "k", "op": "equals", "values": ()}, "exactly one value"),
        ({"key": "k", "op": "equals", "values": ("a", "b")}, "exactly one value"),
        ({"key": "k", "op": "in", "values": ()}, "at least one value"),
        ({"key": "k", "op": "not_in", "values": ()}, "at least one value"),
        ({"key": "-k", "op": "exists"}, "invalid label key"),
        ({"key": "k", "op": "exists", "extra": 1}, "Extra inputs"),
    ],
)
def test_selector_validation(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        LabelSelector.model_validate(fields)


@pytest.mark.parametrize(
    ("values", "expected"),
    [(True, ("true",)), (8, ("8",)), ("eu", ("eu",)), ([True, 2.0, "x"], ("true", "2", "x"))],
)
def test_selector_values_normalised(values: Any, expected: tuple[str, ...]) -> None:
    op = Op.EQUALS if len(expected) == 1 else Op.IN
    assert LabelSelector(key="k", op=op, values=values).values == expected


@pytest.mark.parametrize("weight", [0, -1, 101, 1000])
def test_preferred_weight_bounds(weight: int) -> None:
    with pytest.raises(ValidationError, match="weight"):
        PreferredLabel(selector=parse_selector("ssd"), weight=weight)


@pytest.mark.parametrize("weight", [1, 50, 100])
def test_preferred_weight_accepted(weight: int) -> None:
    assert PreferredLabel(selector=parse_selector("ssd"), weight=weight).weight == weight


def test_preferred_default_weight_is_one() -> None:
    assert PreferredLabel(selector=parse_selector("ssd")).weight == 1


# -- matching -----------------------------------------------------------------

LABELS = normalise_labels({"zone": "eu", "gpu": True, "tier": "ondemand", "cores": 8})


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("zone=eu", True),
        ("zone=us", False),
        ("gpu=true", True),
        ("gpu=True", False),
        ("cores=8", True),
        ("missing=x", False),
        ("zone!=us", True),
        ("zone!=eu", False),
        ("missing!=x", True),  # not_in matches an absent key, like Kubernetes
        ("zone in (eu, us)", True),
        ("zone in (us, ap)", False),
        ("missing in (a)", False),
        ("tier notin (spot)", True),
        ("tier notin (spot, ondemand)", False),
        ("missing notin (a, b)", True),
        ("zone", True),
        ("gpu", True),
        ("missing", False),
    ],
)
def test_selector_matches(text: str, matches: bool) -> None:
    assert parse_selector(text).matches(LABELS) is matches


def test_selector_matches_empty_labels() -> None:
    assert parse_selector("zone").matches({}) is False
    assert parse_selector("zone=eu").matches({}) is False
    assert parse_selector("zone in (eu)").matches({}) is False
    assert parse_selector("zone notin (eu)").matches({}) is True


def test_selector_on_bool_matches_normalised_labels() -> None:
    sel = LabelSelector(key="gpu", op=Op.EQUALS, values=True)
    assert sel.matches(normalise_labels({"gpu": True})) is True
    assert sel.matches(normalise_labels({"gpu": False})) is False


# -- conversions --------------------------------------------------------------


def test_as_selector_passes_objects_through() -> None:
    sel = LabelSelector(key="k", op=Op.EXISTS)
    assert as_selector(sel) is sel
    assert as_selector("k") == sel


def test_as_selectors_from_strings() -> None:
    sels = as_selectors(["zone=eu", "ssd", "tier notin (spot)"])
    assert [(s.key, s.op, s.values) for s in sels] == [
        ("zone", Op.EQUALS, ("eu",)),
        ("ssd", Op.EXISTS, ()),
        ("tier", Op.NOT_IN, ("spot",)),
    ]


def test_as_selectors_from_mapping() -> None:
    sels = as_selectors({"zone": ["eu", "us"], "gpu": True, "cores": 8})
    assert [(s.key, s.op, s.values) for s in sels] == [
        ("zone", Op.IN, ("eu", "us")),
        ("gpu", Op.EQUALS, ("true",)),
        ("cores", Op.EQUALS, ("8",)),
    ]


def test_as_preferences_from_mapping_and_list() -> None:
    prefs = as_preferences({"zone=eu": 5, "ssd": 100})
    assert [(str(p.selector), p.weight) for p in prefs] == [("zone=eu", 5), ("ssd", 100)]
    explicit = PreferredLabel(selector=parse_selector("x"), weight=7)
    prefs = as_preferences(["zone=eu", explicit])
    assert [(str(p.selector), p.weight) for p in prefs] == [("zone=eu", 1), ("x", 7)]


def test_as_preferences_refuses_bad_weight() -> None:
    with pytest.raises(ValidationError, match="weight"):
        as_preferences({"zone=eu": 0})
