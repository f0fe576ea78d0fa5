"""Values users pass through the fleet (arguments, inputs, return values), bounded in depth.

A value is stored in the run store inside several layers of models, and decoded again by
every coordinator start and by agents; a value nested a few hundred levels deep passed
the first check and then broke every later decode (pydantic's recursion limit), so a
coordinator could not start until the record was deleted by hand. The bound is checked
where a value enters (the client's models, the coordinator's decode of a submission, the
agent's encoding of a return value), before any recursive validation, and its error says
what to change.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import BeforeValidator, JsonValue

MAX_DEPTH: Final = 64
"""Levels of lists and objects in one value; JSON documents from real data rarely pass 20."""


def depth_error(value: object, limit: int = MAX_DEPTH) -> str | None:
    """Why ``value`` is nested too deeply, or None. Iterative, so any depth is safe to ask."""
    if not isinstance(value, list | tuple | dict):
        return None
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if depth > limit:
            return f"value is nested more than {limit} levels deep (lists and objects)"
        children = item.values() if isinstance(item, dict) else item
        todo.extend(
            (child, depth + 1) for child in children if isinstance(child, list | tuple | dict)
        )
    return None


def bounded(value: Any) -> Any:
    """Pydantic ``BeforeValidator``: refuse a too-deep value before it is validated."""
    why = depth_error(value)
    if why is not None:
        raise ValueError(why)
    return value


Value = Annotated[JsonValue, BeforeValidator(bounded)]
"""A JSON value no deeper than ``MAX_DEPTH``: the type of every user value on the wire."""
