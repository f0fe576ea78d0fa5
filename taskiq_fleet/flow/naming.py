"""Node ids and short names derived from tasks."""

from __future__ import annotations

from typing import Any

from shared.wire.subjects import as_token


def short_name(task: Any) -> str:
    """``module:func`` -> ``func``: what the documents call a task in DAG printouts."""
    name = str(getattr(task, "task_name", getattr(task, "__name__", "task")))
    return name.rsplit(":", 1)[-1].rsplit(".", 1)[-1]


def task_name(task: Any) -> str:
    name = getattr(task, "task_name", None)
    if not isinstance(name, str):
        raise TypeError(f"{task!r} is not a taskiq task (decorate it with @broker.task)")
    return name


def node_id(task: Any, index: int) -> str:
    return as_token(f"{short_name(task)}_{index}")
