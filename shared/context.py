"""What a running task can learn about its own execution.

The agent sets these; user code reads them through ``taskiq_fleet``. They live here,
not in the agent, so that the user's package and the agent share them without either
importing the other.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Set inside the task that runs the attempt; the receiver copies the context into the
# thread of a sync task, so both kinds of task see them.
attempt_var: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "fleet_attempt", default=None
)
gpu_devices_var: contextvars.ContextVar[tuple[int, ...]] = contextvars.ContextVar(
    "fleet_gpu_devices", default=()
)


def current_attempt() -> int | None:
    """The attempt number (1 for the first try) of the running task; None outside the agent."""
    return attempt_var.get()


def current_gpu_devices() -> tuple[int, ...]:
    """Device indexes reserved for the running task; empty when it asked for no GPU."""
    return gpu_devices_var.get()


@dataclass(frozen=True)
class PipelineContext:
    """Given to a task that declares a ``PipelineContext`` parameter (Execution §6), plus
    where it runs: the worker's name and the GPU devices the node was given."""

    pipeline_id: str
    step_index: int
    task_id: str
    execution_mode: str
    started_at: datetime
    broker: Any
    worker: str = ""
    gpu_devices: tuple[int, ...] = ()
    attempt: int = 1


@functools.lru_cache(maxsize=4096)
def context_parameter(func: Callable[..., Any]) -> str | None:
    """The name of the parameter annotated ``PipelineContext``, if the function has one
    (cached: the agent asks once per attempt)."""
    for name, param in inspect.signature(func).parameters.items():
        annotation = param.annotation
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        if text.rsplit(".", 1)[-1].replace("| None", "").strip() == "PipelineContext":
            return name
    return None
