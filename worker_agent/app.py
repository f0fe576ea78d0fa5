"""Loading the user's taskiq broker from ``module:attribute``, as ``taskiq worker`` does.

Every way this can go wrong gets its own message, because it is the first
thing an operator types on a new host and a bare traceback helps nobody.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from taskiq import AsyncBroker


class AppError(ValueError):
    """The APP argument does not name a usable taskiq broker."""


def load_broker(spec: str, *, search_path: Path | None = None) -> AsyncBroker:
    """Import ``module:attribute`` and check that it is a taskiq ``AsyncBroker``.

    The current directory (or ``search_path``) goes first on ``sys.path``, so
    ``fleet agent tasks:broker`` works from a project checkout like
    ``taskiq worker tasks:broker`` does.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise AppError(f"APP must look like 'module:broker', got {spec!r}")
    root = str(search_path or Path.cwd())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise AppError(f"cannot import module {module_name!r}: not found on {root}") from exc
        raise AppError(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise AppError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    target: object = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise AppError(f"module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not isinstance(target, AsyncBroker):
        raise AppError(f"{spec!r} is a {type(target).__name__}, not a taskiq broker (AsyncBroker)")
    return target
