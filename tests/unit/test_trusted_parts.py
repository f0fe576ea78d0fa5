"""``Part.trusted`` builds what ``model_construct`` builds, defaults included."""

from __future__ import annotations

import pytest
from pydantic import Field

from shared.dag import Dag, Node
from shared.wire.parts import Part
from shared.wire.runs import Submit


class _Holder(Part):
    name: str
    tags: dict[str, str] = Field(default_factory=dict)
    seen: list[int] = []  # noqa: RUF012 - a mutable plain default, copied per instance
    count: int = 3


def test_trusted_equals_model_construct() -> None:
    dag = Dag.trusted(nodes=(Node(id="task", task="noop"),))
    fields = {"run_id": "a" * 32, "name": "noop", "progress": False, "dag": dag, "fresh": True}
    ours, theirs = Submit.trusted(**fields), Submit.model_construct(**fields)
    assert ours == theirs
    assert ours.model_fields_set == theirs.model_fields_set == set(fields)
    assert ours.model_dump_json() == theirs.model_dump_json()


def test_defaults_are_made_per_instance() -> None:
    first, second = _Holder.trusted(name="a"), _Holder.trusted(name="b")
    assert (first.tags, first.seen, first.count) == ({}, [], 3)
    first.tags["x"] = "1"
    first.seen.append(1)
    assert (second.tags, second.seen) == ({}, [])
    assert first.model_fields_set == {"name"}


def test_a_factory_needing_other_fields_is_refused() -> None:
    class Derived(Part):
        a: int
        b: int = Field(default_factory=lambda data: data["a"])

    with pytest.raises(TypeError, match="needs the other fields"):
        Derived.trusted(a=1)
