"""``encode_value`` and ``decode_value``: pydantic-core's fast encoder and reader, with
``json``'s answer wherever the two could differ in meaning (NaN and infinity refused with
the reason, lone surrogates)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.wire.codec import decode_value, encode_value

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(json_values)
def test_any_json_value_reads_back_as_it_was(value: object) -> None:
    assert json.loads(encode_value(value)) == value  # type: ignore[arg-type]
    assert decode_value(encode_value(value)) == value  # type: ignore[arg-type]


@given(json_values)
def test_what_json_writes_is_read_as_json_reads_it(value: object) -> None:
    data = json.dumps(value).encode()
    assert decode_value(data) == json.loads(data)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, [1, {"x": math.nan}]])
def test_nan_and_infinity_are_refused_with_the_reason(bad: object) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        encode_value(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["NaN", "-Infinity", "\ud800", "é€😀"])
def test_strings_that_look_like_the_exceptions_stay_strings(text: str) -> None:
    assert json.loads(encode_value(text)) == text
    assert json.loads(encode_value({"k": [text]})) == {"k": [text]}
    assert decode_value(encode_value({"k": [text]})) == {"k": [text]}


def test_a_large_text_is_written_by_the_fast_encoder() -> None:
    """``json`` escapes non-ASCII; pydantic-core writes UTF-8 as it is: the bytes say which
    one wrote them (the fast one, for what carries no NaN or infinity)."""
    text = "é" * 100_000
    assert encode_value(text) == b'"' + text.encode() + b'"'


def test_a_large_text_without_the_words_is_not_searched_for_them() -> None:
    """Only ``N`` and ``I`` lead to the search; a text full of them still stays a string."""
    assert encode_value("x" * 100_000) == b'"' + b"x" * 100_000 + b'"'
    nearly = "NaI" * 10_000 + "Infinit"
    assert encode_value([nearly]) == json.dumps([nearly], separators=(",", ":")).encode()
