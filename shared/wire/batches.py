"""A batch that does not decode whole is taken apart, so one bad item costs only itself.

The coordinator sends one worker's assignments together. If one of them could not be
decoded (a value too deep, a field a newer coordinator added), refusing the whole batch
failed every other client's node in it with a misleading "never received the
assignment". Each item is decoded on its own instead; a bad one is named by its attempt
when that much can be read, so the receiver can refuse exactly it.
"""

from __future__ import annotations

import json

from pydantic import TypeAdapter, ValidationError

from shared.wire.protocol import AttemptRef, Item, ItemModel, M, ProtocolError, decode_each

_ITEM: TypeAdapter[ItemModel] = TypeAdapter(Item)

Bad = tuple[AttemptRef | None, ProtocolError]
"""An item that did not decode: its attempt when readable, and why."""


def decode_apart(data: bytes, model: type[M]) -> tuple[list[M], list[Bad]]:
    """The ``model`` items of a message or a Batch, and the items that did not decode.

    A message that is not a batch, or not JSON at all, still raises ProtocolError.
    """
    try:
        return list(decode_each(data, model)), []
    except ProtocolError as whole:
        items = _items(data)
        if items is None:
            raise whole from None
    good: list[M] = []
    bad: list[Bad] = []
    for item in items:
        decoded = _one(item, model)
        if isinstance(decoded, ProtocolError):
            bad.append((_ref(item), decoded))
        else:
            good.append(decoded)
    return good, bad


def _items(data: bytes) -> list[object] | None:
    try:
        obj = json.loads(data)
    except (ValueError, TypeError, RecursionError):
        return None
    if not isinstance(obj, dict) or obj.get("type") != "batch":
        return None
    items = obj.get("items")
    return items if isinstance(items, list) and items else None


def _one(item: object, model: type[M]) -> M | ProtocolError:
    try:
        decoded = _ITEM.validate_python(item)
    except (ValidationError, RecursionError) as exc:
        return ProtocolError("invalid", _short(exc))
    if not isinstance(decoded, model):
        return ProtocolError("type", f"a {decoded.type!r} item among {model.__name__} items")
    return decoded


def _ref(item: object) -> AttemptRef | None:
    if not isinstance(item, dict):
        return None
    try:
        return AttemptRef.model_validate(item.get("ref"))
    except ValidationError:
        return None


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]
