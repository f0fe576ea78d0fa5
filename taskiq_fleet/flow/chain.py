"""A sequential pipeline whose steps are known at ``kiq`` time, as one fleet run.

``call_next`` steps and ``map`` steps with their own items compile to one DAG: each step
takes the previous step's output, and a map's nodes wait for the previous step. The
coordinator then owns the whole pipeline (placement, retries, its timeout, restarts), the
submitting process may exit, and anyone can wait for it by its task id, since the run's
id is the task id and its last step's output is named ``result``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import JsonValue

from shared.dag import RetryPolicy
from shared.wire import label_keys
from shared.wire.runs import TERMINAL_NODE, NodeView, RunUpdate
from taskiq_fleet.broker import RESULT  # the last step's output, as a plain kiq's
from taskiq_fleet.flow.annotations import parameters_of
from taskiq_fleet.flow.dataflow import DataflowPipeline
from taskiq_fleet.flow.naming import node_id, short_name

_PART = re.compile(rf"^{RESULT}__(\d+)$")


@dataclass(frozen=True)
class StepPlan:
    name: str
    """``"<index>:<task>"``, as ``failed_step`` and tracking name it."""
    output: str
    nodes: tuple[str, ...]


def step_name(index: int, *tasks: Any) -> str:
    """``"<index>:<task>"``; a group's tasks joined by ``+``."""
    return f"{index}:{'+'.join(short_name(t) for t in tasks)}"


def positional(task: Any) -> list[str]:
    """Where a step's arguments go, as in a call ``task(previous)``: its parameters in
    order, those with defaults too."""
    required, optional = parameters_of(task)
    return required + optional


def first_call(
    task: Any, given: dict[str, Any], args: Sequence[Any], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The first step's arguments from ``kiq(*args, **kwargs)``, as a call would bind them:
    a ``TypeError`` at ``kiq`` for too many, unknown or missing ones, not a failed run."""
    required, optional = parameters_of(task)
    free = [p for p in required + optional if p not in given]
    name = short_name(task)
    if len(args) > len(free):
        raise TypeError(f"{name} takes {len(free)} arguments here ({free}), got {len(args)}")
    values = dict(zip(free, args, strict=False))
    for key, value in kwargs.items():
        if key in values or key in given:
            raise TypeError(f"{name} got two values for {key!r}")
        if key not in free:
            raise TypeError(f"{name} has no parameter {key!r}")
        values[key] = value
    missing = [p for p in required if p not in values and p not in given]
    if missing:
        raise TypeError(f"{name} is missing {missing}: give them to kiq()")
    return values


def compile_chain(
    steps: Sequence[Any],
    args: Sequence[JsonValue],
    kwargs: dict[str, JsonValue],
    retry: RetryPolicy | None,
    timeout: float | None,
    broker: Any,
) -> tuple[DataflowPipeline, dict[str, Any], list[StepPlan]]:
    """The DAG (as a ``DataflowPipeline``), its inputs and where each step's nodes are.
    ``steps`` are ``sequential._Step``s, none a map over the previous result. Each step
    takes the output of the last step that is not a ``call_after`` side effect, and waits
    for the step just before it; the last such step's output is ``result``."""
    flow = DataflowPipeline(broker, timeout=timeout)
    flow.retry, flow.mode = retry, "sequential"
    inputs: dict[str, Any] = {}
    plans: list[StepPlan] = []
    valued = [i for i, step in enumerate(steps) if step.kind != "after"]
    value: str | None = None  # the output the next step takes
    previous: list[int] = []
    for index, step in enumerate(steps):
        output = RESULT if index == valued[-1] else f"step{index}"
        start = len(flow._entries)
        labels: dict[str, JsonValue] = {label_keys.STEP: index}
        if step.kind == "map":
            flow.map(step.task, list(step.items), output=output, max_parallel=step.max_parallel)
            for entry in flow._entries[start:]:
                entry.labels = labels
                if not entry.after:  # the head of each lane waits for the previous step
                    entry.after = tuple(previous)
        else:
            members = step.tasks if step.kind == "group" else (step.task,)
            names = [f"{output}__{j}" for j in range(len(members))]
            for member, name in zip(members, names, strict=True):
                given = dict(step.kwargs)
                bindings = _bindings(member, given, value, index, args, kwargs, inputs)
                flow.add_dataflow_task(
                    member,
                    output=output if step.kind != "group" else name,
                    inputs=bindings,
                    kwargs=given,
                    labels=labels,
                )
                after_effect = index > 0 and steps[index - 1].kind == "after"
                if index > 0 and (value not in bindings.values() or after_effect):
                    flow._entries[-1].after = tuple(previous)
            if step.kind == "group":
                flow._lists[output] = tuple(names)
        previous = list(range(start, len(flow._entries)))
        if step.kind != "after":
            value = output
        nodes = tuple(node_id(flow._entries[i].task, i) for i in previous)
        members = step.tasks if step.kind == "group" else (step.task,)
        plans.append(StepPlan(step_name(index, *members), output, nodes))
    return flow, inputs, plans


def _bindings(
    task: Any,
    given: dict[str, Any],
    value: str | None,
    index: int,
    args: Sequence[JsonValue],
    kwargs: dict[str, JsonValue],
    inputs: dict[str, Any],
) -> dict[str, str]:
    """Where one node of a step takes its arguments from: the first step from the
    pipeline's own arguments (as run inputs, so large ones travel by reference), a later
    one from ``value``, the output of the last step that was not a side effect."""
    bindings: dict[str, str] = {}
    if index == 0:
        for param, given_value in first_call(task, given, args, kwargs).items():
            bindings[param] = f"arg_{param}"
            inputs[f"arg_{param}"] = given_value
        return bindings
    free = [p for p in positional(task) if p not in given]
    if free and value is not None:
        bindings[free[0]] = value
    return bindings


def result_of(outputs: dict[str, Any]) -> Any:
    """The last step's value: ``result``, or the list of a final map's ``result__<i>``."""
    if RESULT in outputs:
        return outputs[RESULT]
    parts = sorted((int(m.group(1)), v) for k, v in outputs.items() if (m := _PART.match(k)))
    return [v for _, v in parts] if parts else None


def step_outputs(plans: list[StepPlan], outputs: dict[str, Any]) -> dict[str, Any]:
    """Each finished step's value by step name (``partial_results``)."""
    found: dict[str, Any] = {}
    for plan in plans:
        if plan.output in outputs:
            found[plan.name] = outputs[plan.output]
    return found


@dataclass(frozen=True)
class StepEnd:
    name: str
    status: str
    duration_ms: int
    worker: str | None
    error: str | None


class StepWatcher:
    """Steps as they end, from the run's pushed node updates, so tracking shows each step
    when it ends rather than all at the run's end. It keeps when each node's first attempt
    started: a node's view keeps only its last attempt's, and a step's duration includes
    its retries."""

    def __init__(self, plans: list[StepPlan]) -> None:
        self.plans = plans
        self.first_start: dict[str, float] = {}
        self._nodes: dict[str, NodeView] = {}
        self._ended: set[str] = set()
        self._started: set[str] = set()

    def feed(self, update: RunUpdate) -> list[StepEnd]:
        """What this update changed, in pipeline order: a step RUNNING when its first node
        starts, and its end when all its nodes are final; at the run's end, every step that
        started and is not ended yet."""
        nodes = update.nodes + (update.run.nodes if update.run is not None else ())
        for node in nodes:
            self._nodes[node.id] = node
            if node.started_at is not None:
                first = self.first_start.get(node.id, node.started_at)
                self.first_start[node.id] = min(node.started_at, first)
        ends = []
        for plan in self.plans:
            if plan.name in self._ended:
                continue
            mine = [self._nodes[n] for n in plan.nodes if n in self._nodes]
            if not any(n.started_at is not None for n in mine):
                continue
            final = len(mine) == len(plan.nodes) and all(n.status in TERMINAL_NODE for n in mine)
            if final or update.run is not None:
                self._ended.add(plan.name)
                ends.append(_end(plan.name, mine, self.first_start))
            elif plan.name not in self._started:
                self._started.add(plan.name)
                workers = ",".join(dict.fromkeys(n.worker for n in mine if n.worker)) or None
                ends.append(StepEnd(plan.name, "RUNNING", 0, workers, None))
        return ends


def _end(name: str, nodes: list[NodeView], first: dict[str, float]) -> StepEnd:
    statuses = {n.status for n in nodes}
    if "failed" in statuses or "timed_out" in statuses:
        status = "FAILED"
    elif statuses & {"cancelled", "skipped"}:
        status = "CANCELLED"
    else:
        status = "COMPLETED"
    starts = [min(n.started_at, first.get(n.id, n.started_at)) for n in nodes if n.started_at]
    ends = [n.finished_at for n in nodes if n.finished_at is not None]
    took = round((max(ends) - min(starts)) * 1000) if starts and ends else 0
    workers = list(dict.fromkeys(n.worker for n in nodes if n.worker))
    errors = [f"{n.error.type}: {n.error.message}" for n in nodes if n.error is not None]
    error = errors[0] if errors else None
    return StepEnd(name, status, max(0, took), ",".join(workers) or None, error)
