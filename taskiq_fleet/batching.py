"""``@broker.task(batch=True, batch_size=..., batch_timeout=...)`` on the producer's side.

Each ``.kiq(item, **other)`` is an ordinary durable submission: a run whose one node is
a batch member (``shared.dag.Batching``). The coordinator groups waiting members per
task and per value of the other arguments, from every producer, and runs each group as
one node (``coordinator/scheduling/batches.py``), so a producer may exit right after
``kiq`` and ``Task(task_id)`` finds each member's own result from any process. Nothing is
buffered here; this module only reads a task's batch options and marks the item.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.dag import Batching
from shared.wire import label_keys

DEFAULT_SIZE = 100
DEFAULT_TIMEOUT = 3.0


class BatchConfigError(ValueError):
    """A task's ``batch_size`` / ``batch_timeout`` labels are not usable."""


@dataclass(frozen=True)
class BatchConfig:
    size: int = DEFAULT_SIZE
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_labels(cls, labels: dict[str, Any]) -> BatchConfig | None:
        """The config when the labels ask for batching (``batch`` true), else ``None``.
        taskiq may carry label values as text, so ``"True"``/``"60"``/``"3"`` are read too."""
        if not _truthy(labels.get(label_keys.BATCH)):
            return None
        try:
            size = int(_or(labels.get(label_keys.BATCH_SIZE), DEFAULT_SIZE))
            timeout = float(_or(labels.get(label_keys.BATCH_TIMEOUT), DEFAULT_TIMEOUT))
        except (TypeError, ValueError) as exc:
            raise BatchConfigError(f"bad batch labels: {exc}") from None
        if size < 1:
            raise BatchConfigError(f"batch_size must be >= 1, got {size}")
        if not timeout > 0:
            raise BatchConfigError(f"batch_timeout must be > 0, got {timeout}")
        return cls(size=size, timeout=timeout)

    def member(
        self,
        task_name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        func: Callable[..., Any] | None,
    ) -> Batching:
        """What marks one kiq as a member: the item is its first positional argument or,
        given by keyword, the function's first parameter (the list of items)."""
        if args:
            return Batching(size=self.size, timeout=self.timeout)
        item = first_parameter(func)
        if item is None or item not in kwargs:
            raise TypeError(f"{task_name}: a batched kiq needs its item")
        return Batching(size=self.size, timeout=self.timeout, item=item)


def _or(value: Any, default: Any) -> Any:
    return default if value is None or value == "None" else value


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def first_parameter(func: Callable[..., Any] | None) -> str | None:
    """The name of a batched function's first parameter (the list of items)."""
    if func is None:
        return None
    try:
        params = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return None
    return params[0] if params else None
