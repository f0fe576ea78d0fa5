"""The documents' dataflow annotations: what a task produces and what it takes.

``@pipeline_task(output="features")`` stacks with ``@broker.task`` in either
order, like the resource profiles. It only records names; the pipeline
builders in ``taskiq_fleet/flow/`` read them to wire a DAG: a parameter named
like another task's output receives that output.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from taskiq import AsyncTaskiqDecoratedTask

from taskiq_fleet.profiles import TaskResourceProfile

FLOW_ATTR = "__fleet_flow__"
T = TypeVar("T", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class FlowSpec:
    outputs: tuple[str, ...]
    inputs: tuple[str, ...] | None = None
    """Explicit input names; None: every parameter without a default, by name."""
    description: str = ""


class RetryException(Exception):
    """Raise it from a task to ask for a retry (Tasks guide §6.3): it is retried, up to the
    task's ``max_retries`` or 3, while other exceptions follow the retry policy (none by
    default: they fail at once). taskiq itself has no such class; import it from here."""


@dataclass(frozen=True)
class TaskInfo:
    """Descriptive metadata, as in the documents (Tasks guide §3.2)."""

    name: str
    description: str = ""
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)


def pipeline_task(
    output: str | None = None,
    *,
    outputs: Sequence[str] | None = None,
    inputs: Sequence[str] | None = None,
    description: str = "",
    resources: TaskResourceProfile | None = None,
) -> Callable[[T], T]:
    """Name what a task produces (``output``, or ``outputs`` for a tuple result)."""
    if output is not None and outputs is not None:
        raise ValueError("give output= or outputs=, not both")
    names = (output,) if output is not None else tuple(outputs or ())
    if len(set(names)) != len(names):
        raise ValueError(f"an output is named twice: {list(names)}")
    for name in names:
        if not name or not isinstance(name, str):
            raise ValueError(f"output names must be non-empty strings, got {name!r}")
    spec = FlowSpec(names, None if inputs is None else tuple(inputs), description)

    def decorate(target: T) -> T:
        if resources is not None:
            target = resources(target)
        for holder in _holders(target):
            setattr(holder, FLOW_ATTR, spec)
        return target

    return decorate


def pipeline_task_multi_output(
    outputs: Sequence[str], *, description: str = ""
) -> Callable[[T], T]:
    """The same as ``pipeline_task(outputs=...)``, as the documents offer it."""
    return pipeline_task(outputs=outputs, description=description)


def flow_of(task: object) -> FlowSpec | None:
    for holder in (task, getattr(task, "original_func", None)):
        spec = getattr(holder, FLOW_ATTR, None)
        if isinstance(spec, FlowSpec):
            return spec
    return None


def parameters_of(task: object) -> tuple[list[str], list[str]]:
    """(required, optional) keyword parameter names of a task's function; a parameter
    taskiq fills itself (``TaskiqDepends``, ``Context``, a ``context``) is left out."""
    func = cast(Callable[..., Any], getattr(task, "original_func", task))
    required: list[str] = []
    optional: list[str] = []
    for name, param in inspect.signature(func).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or _injected(param):
            continue
        (optional if param.default is not param.empty else required).append(name)
    return required, optional


def bind_inputs(
    task: object, named: Sequence[str] | None, fixed: Collection[str] = ()
) -> dict[str, str]:
    """Parameter -> the output or external input it takes, for every way of building a
    DAG (``DataflowPipeline``, ``DataflowRegistry``), so that ``@pipeline_task(inputs=...)``
    means the same in each. ``None``: every required parameter not ``fixed``, by its own
    name. Otherwise a named input goes to the parameter of that name, or else to the first
    required parameter still unnamed (``inputs=["features"]`` on ``tag(data)``); required
    parameters left over keep their own names."""
    required, optional = parameters_of(task)
    if named is None:
        return {p: p for p in required if p not in fixed}
    params = set(required) | set(optional)
    free = [p for p in required if p not in named and p not in fixed]
    wiring: dict[str, str] = {}
    for name in named:
        if name in params or not free:
            wiring[name] = name
        else:
            wiring[free.pop(0)] = name
    for param in free:
        wiring[param] = param
    return wiring


def _injected(param: inspect.Parameter) -> bool:
    default = param.default
    if type(default).__name__ == "TaskiqDepends":
        return True
    annotation = str(param.annotation)
    return (
        "TaskiqDepends" in annotation or annotation.endswith("Context") or param.name == "context"
    )


def _holders(target: object) -> list[object]:
    found = [target]
    if isinstance(target, AsyncTaskiqDecoratedTask):
        found.append(target.original_func)
        registered = target.broker.find_task(target.task_name)
        if registered is not None and registered is not target:
            found.append(registered)
    return found
