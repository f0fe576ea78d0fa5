"""Arguments shared by the ``fleet`` subcommands, so every bad value reads alike."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T", int, float)


def number(
    kind: Callable[[str], T],
    minimum: float = 0,
    *,
    inclusive: bool = False,
    maximum: float | None = None,
) -> Callable[[str], T]:
    """An argparse ``type``: a ``kind`` above ``minimum`` (or at it, when ``inclusive``),
    and at most ``maximum`` when one is given."""

    def parse(text: str) -> T:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < minimum or (value == minimum and not inclusive):
            sign = ">=" if inclusive else ">"
            raise argparse.ArgumentTypeError(f"must be {sign} {minimum:g}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum:g}, got {text}")
        return value

    parse.__name__ = getattr(kind, "__name__", "number")  # argparse names it in errors
    return parse


def add_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    """``--metrics-port`` and ``--metrics-host`` of ``fleet coordinator`` and ``fleet agent``."""
    env = os.environ.get
    group = parser.add_argument_group("metrics")
    group.add_argument(
        "--metrics-port",
        type=number(int, 1, inclusive=True, maximum=65535),
        default=env("FLEET_METRICS_PORT"),
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (needs the 'metrics' "
        "extra; env FLEET_METRICS_PORT)",
    )
    group.add_argument(
        "--metrics-host",
        default=env("FLEET_METRICS_HOST", "0.0.0.0"),
        metavar="ADDRESS",
        help="address the metrics page listens on (default: 0.0.0.0, every interface; "
        "env FLEET_METRICS_HOST)",
    )


def subject_prefix(text: str) -> str:
    """An argparse ``type``: a prefix ``shared.wire.subjects.Subjects`` accepts."""
    from shared.wire.subjects import Subjects

    try:
        Subjects(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def import_object(spec: str, *, form: str, search_path: Path | None = None) -> object:
    """The object ``module:attribute`` names (the attribute may be dotted), as ``taskiq
    worker`` finds a broker; ``ValueError`` with one clear line for every way that fails.

    The current directory (or ``search_path``) goes first on ``sys.path``, so a project
    checkout's modules are found. ``form`` opens the message for a malformed ``spec``.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{form}, got {spec!r}")
    root = str(search_path or Path.cwd())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        target: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ValueError(f"cannot import module {module_name!r}: not found on {root}") from exc
        raise ValueError(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise ValueError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    return target
