"""Argument types shared by the ``fleet`` subcommands, so every bad number reads alike."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", int, float)


def number(
    kind: Callable[[str], T], minimum: float = 0, *, inclusive: bool = False
) -> Callable[[str], T]:
    """An argparse ``type``: a ``kind`` above ``minimum`` (or at it, when ``inclusive``)."""

    def parse(text: str) -> T:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < minimum or (value == minimum and not inclusive):
            sign = ">=" if inclusive else ">"
            raise argparse.ArgumentTypeError(f"must be {sign} {minimum:g}, got {text}")
        return value

    parse.__name__ = getattr(kind, "__name__", "number")  # argparse names it in errors
    return parse
