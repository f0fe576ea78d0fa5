"""Loading the user's taskiq broker from ``module:attribute``, as ``taskiq worker`` does.

Every way this can go wrong gets its own message, because it is the first
thing an operator types on a new host and a bare traceback helps nobody.
"""

from __future__ import annotations

from pathlib import Path

from taskiq import AsyncBroker

from shared.cliargs import import_object


class AppError(ValueError):
    """The APP argument does not name a usable taskiq broker."""


def load_broker(spec: str, *, search_path: Path | None = None) -> AsyncBroker:
    """Import ``module:attribute`` and check that it is a taskiq ``AsyncBroker``.

    The current directory (or ``search_path``) goes first on ``sys.path``, so
    ``fleet agent tasks:broker`` works from a project checkout like
    ``taskiq worker tasks:broker`` does.
    """
    try:
        target = import_object(
            spec, form="APP must look like 'module:broker'", search_path=search_path
        )
    except ValueError as exc:
        raise AppError(str(exc)) from exc
    if not isinstance(target, AsyncBroker):
        raise AppError(f"{spec!r} is a {type(target).__name__}, not a taskiq broker (AsyncBroker)")
    return target
