"""Worker labels and the selectors that tasks state against them.

Labels are plain key/value strings so that they compare the same after a trip
through JSON or NATS headers; ``True`` and ``8`` from the documents' examples
are normalised to ``"true"`` and ``"8"`` on the way in.

Selectors follow Kubernetes' set-based syntax, which operators already know:
``"zone=eu"``, ``"zone!=eu"``, ``"zone in (eu, us)"``, ``"tier notin (spot)"``
and a bare ``"ssd"`` for "the key exists".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

LabelValue = str | int | float | bool


def label_value(value: LabelValue) -> str:
    """One canonical text for a label value, so ``True`` matches ``"true"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_KEY_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.\-/]*[A-Za-z0-9])?$")


def check_label_key(key: str) -> str:
    if not _KEY_RE.match(key):
        raise ValueError(
            f"invalid label key {key!r}: use letters, digits, '.', '_', '-', '/' "
            "and start and end with a letter or digit"
        )
    return key


def normalise_labels(labels: Mapping[str, LabelValue] | None) -> dict[str, str]:
    """Validate keys and canonicalise values of a worker's labels."""
    return {check_label_key(k): label_value(v) for k, v in (labels or {}).items()}


Labels = Annotated[dict[str, str], BeforeValidator(normalise_labels)]


class Op(StrEnum):
    EQUALS = "equals"
    IN = "in"
    NOT_IN = "not_in"
    EXISTS = "exists"


def _as_values(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str | int | float | bool):
        return (label_value(raw),)
    return tuple(label_value(v) for v in raw)


class LabelSelector(BaseModel):
    """A required condition on one worker label.

    ``not_in`` matches a worker that lacks the key, as in Kubernetes: "not on
    spot machines" should not exclude machines that never declared a tier.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    op: Op
    values: Annotated[tuple[str, ...], BeforeValidator(_as_values)] = ()

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_label_key(self.key)
        if self.op is Op.EXISTS and self.values:
            raise ValueError(f"selector on {self.key!r}: 'exists' takes no values")
        if self.op is Op.EQUALS and len(self.values) != 1:
            raise ValueError(f"selector on {self.key!r}: 'equals' takes exactly one value")
        if self.op in (Op.IN, Op.NOT_IN) and not self.values:
            raise ValueError(f"selector on {self.key!r}: '{self.op}' needs at least one value")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op is Op.EXISTS:
            return value is not None
        if self.op is Op.NOT_IN:
            return value not in self.values
        return value in self.values

    def __str__(self) -> str:
        if self.op is Op.EXISTS:
            return self.key
        if self.op is Op.EQUALS:
            return f"{self.key}={self.values[0]}"
        if self.op is Op.NOT_IN and len(self.values) == 1:
            return f"{self.key}!={self.values[0]}"
        word = "in" if self.op is Op.IN else "notin"
        return f"{self.key} {word} ({', '.join(self.values)})"

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        """Parse the Kubernetes-style selector syntax described in the module docstring."""
        return parse_selector(text)


class PreferredLabel(BaseModel):
    """A soft condition: workers that match gain ``weight`` in the ranking."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    selector: LabelSelector
    weight: int = Field(default=1, ge=1, le=100)


_SET_RE = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s+(?P<op>\S+)\s*\((?P<values>[^)]*)\)\s*$")
_CMP_RE = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s*(?P<op>==|!=|=)\s*(?P<value>[^\s(),]+)\s*$")
_KEY_ONLY_RE = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s*$")
_SET_OPS = {"in": Op.IN, "notin": Op.NOT_IN, "not_in": Op.NOT_IN}


def parse_selector(text: str) -> LabelSelector:
    if m := _SET_RE.match(text):
        op = _SET_OPS.get(m["op"].lower())
        if op is None:
            raise ValueError(f"unknown selector operator {m['op']!r} in {text!r}: use in or notin")
        values = [v.strip() for v in m["values"].split(",") if v.strip()]
        return LabelSelector(key=m["key"], op=op, values=tuple(values))
    if m := _CMP_RE.match(text):
        op = Op.NOT_IN if m["op"] == "!=" else Op.EQUALS
        return LabelSelector(key=m["key"], op=op, values=(m["value"],))
    if m := _KEY_ONLY_RE.match(text):
        return LabelSelector(key=m["key"], op=Op.EXISTS)
    raise ValueError(
        f"cannot parse label selector {text!r}: expected 'k=v', 'k!=v', "
        "'k in (a, b)', 'k notin (a, b)' or 'k'"
    )


SelectorLike = LabelSelector | str


def as_selector(item: SelectorLike) -> LabelSelector:
    return item if isinstance(item, LabelSelector) else parse_selector(item)


def as_selectors(items: Iterable[SelectorLike] | Mapping[str, Any]) -> tuple[LabelSelector, ...]:
    """Accept selector strings, selector objects, or a ``{key: value | [values]}`` mapping."""
    if isinstance(items, Mapping):
        return tuple(
            LabelSelector(key=k, op=Op.EQUALS if isinstance(v, LabelValue) else Op.IN, values=v)
            for k, v in items.items()
        )
    return tuple(as_selector(i) for i in items)


def as_preferences(
    items: Mapping[str, int] | Iterable[PreferredLabel | SelectorLike],
) -> tuple[PreferredLabel, ...]:
    """Accept ``{"zone=eu": 5}`` or a list of selectors (weight 1) or PreferredLabel."""
    if isinstance(items, Mapping):
        return tuple(PreferredLabel(selector=as_selector(k), weight=w) for k, w in items.items())
    return tuple(
        i if isinstance(i, PreferredLabel) else PreferredLabel(selector=as_selector(i))
        for i in items
    )
