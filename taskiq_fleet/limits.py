"""The process-wide cap on in-flight tasks (``set_max_parallel_tasks``).

The Optimization API sets it; brokers and in-process fleets each apply it their own
way. They subscribe here rather than being called by name, so the Optimization API
does not import the broker and the broker does not import the pipelines' runner.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Listener = Callable[[int | None], None]

_limit: int | None = None
_lock = threading.Lock()
_listeners: list[Listener] = []


def set_max_parallel_tasks(n: int | None) -> None:
    """Cap the parallelism this process's executors ever suggest; ``None`` removes the cap.

    The executors here clamp their answers to it, and the coordinator enforces it
    cluster-wide (like its ``--max-parallel``): every started ``FleetBroker`` of this
    process sends it at once when called inside a running event loop, and a broker
    started later sends it on ``startup()``.
    """
    global _limit
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"max parallel tasks must be a positive integer or None, got {n!r}")
    with _lock:
        _limit = n
    for listener in list(_listeners):
        listener(n)


def get_max_parallel_tasks() -> int | None:
    """The ceiling set by :func:`set_max_parallel_tasks`, ``None`` when there is none."""
    return _limit


def on_change(listener: Listener) -> Listener:
    """Call ``listener`` with every new cap (usable as a decorator)."""
    _listeners.append(listener)
    return listener
