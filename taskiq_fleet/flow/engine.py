"""The documents' low-level API (Execution §7, Performance §11, Tasks §7.2).

``DataflowRegistry`` records tasks with explicit output and input names,
``build_dag()`` (through ``DAGBuilder``) turns them into a ``shared.dag.Dag`` with
``DataflowPipeline``'s own building, and ``ExecutionEngine(broker, dag)`` runs it as
one fleet run (in process on a non-fleet broker) and returns ``{output: value}``.

Custom routing: before submitting, the engine asks ``schedule_task(task_node, inputs)``
for every node, in execution order. The default returns the node's resource request
unchanged; a subclass may return another request (a GPU, a label selector, more RAM)
and the node is submitted with it, so the fleet's scheduler places it accordingly.
``task_node.labels`` shows the node's labels over the task's own taskiq labels
(``@broker.task(requires_gpu=True)``), so the documents' ``labels.get("requires_gpu")``
works. ``inputs`` is the run's external inputs: routing is decided once, at submission,
not per node when its upstream values exist.

``inputs=[...]`` names what a task depends on, as in the documents; a parameter of
the task that it does not name, and that has no default, is still wired by its own
name (to an output, or else to an external input of ``execute``), so
``register_task(load, output="raw", inputs=[])`` with ``load(source_file)`` takes
``source_file`` from ``execute(inputs={"source_file": ...})``. An input name that is
not a parameter of the task goes to its first required parameter still unnamed.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from pydantic import JsonValue
from taskiq import AsyncBroker, AsyncTaskiqDecoratedTask

from shared.dag import Dag, Node, RunOptions
from shared.resources import ResourceRequest
from shared.wire.runs import RunView
from taskiq_fleet.flow.annotations import bind_inputs, flow_of
from taskiq_fleet.flow.dataflow import DataflowPipeline
from taskiq_fleet.flow.errors import pipeline_error
from taskiq_fleet.flow.naming import short_name, task_name
from taskiq_fleet.flow.runner import runner_for, submit_dag

DAG = Dag
"""The documents' ``taskiq_flow.dataflow.DAG``: what ``build_dag()`` returns."""

_NO_DAG = "No DAG built: register tasks with DataflowRegistry.register_task() first"


@dataclass(frozen=True)
class Registration:
    """One task as registered: what it produces, what it takes, fixed arguments."""

    task: Any
    outputs: tuple[str, ...]
    inputs: dict[str, str]
    """Parameter -> output or external input name."""
    kwargs: dict[str, JsonValue] = field(default_factory=dict)
    labels: dict[str, JsonValue] = field(default_factory=dict)


def _registration(
    task: Any,
    output: str | None,
    outputs: Iterable[str] | None,
    inputs: Iterable[str] | None,
    kwargs: Mapping[str, JsonValue] | None,
    labels: Mapping[str, JsonValue] | None,
) -> Registration:
    task_name(task)  # a TypeError for anything that is not a taskiq task
    if output is not None and outputs is not None:
        raise ValueError("give output= or outputs=, not both")
    fixed = dict(kwargs or {})
    spec = flow_of(task)
    names = (output,) if output else tuple(outputs or (spec.outputs if spec else ()))
    names = names or (short_name(task),)
    named = (
        list(inputs)
        if inputs is not None
        else (list(spec.inputs) if spec and spec.inputs is not None else None)
    )
    wiring = bind_inputs(task, named, fixed)
    return Registration(task, names, wiring, fixed, dict(labels or {}))


class DAGBuilder:
    """Turns registrations into a ``Dag`` with ``DataflowPipeline``'s building.

    ``DAGBuilder(registry).build()``, or on its own: ``DAGBuilder().add_task(load,
    output="raw").add_task(clean, output="clean", inputs=["raw"]).build()``.
    """

    def __init__(self, registry: DataflowRegistry | None = None) -> None:
        self._registrations: list[Registration] = list(registry.registrations) if registry else []

    def add_task(
        self,
        task: Any,
        output: str | None = None,
        inputs: Iterable[str] | None = None,
        *,
        outputs: Iterable[str] | None = None,
        kwargs: Mapping[str, JsonValue] | None = None,
        labels: Mapping[str, JsonValue] | None = None,
    ) -> Self:
        self._registrations.append(_registration(task, output, outputs, inputs, kwargs, labels))
        return self

    def pipeline(self) -> DataflowPipeline:
        """The equivalent ``DataflowPipeline`` (on the first task's broker)."""
        if not self._registrations:
            raise ValueError(_NO_DAG)
        broker = getattr(self._registrations[0].task, "broker", None)
        if not isinstance(broker, AsyncBroker):
            raise TypeError(f"{self._registrations[0].task!r} has no taskiq broker")
        pipeline = DataflowPipeline(broker)
        for reg in self._registrations:
            pipeline.add_dataflow_task(
                reg.task,
                outputs=list(reg.outputs),
                inputs=dict(reg.inputs),
                kwargs=dict(reg.kwargs),
                labels=reg.labels,
            )
        return pipeline

    def build(self) -> Dag:
        """The DAG; ValueError for a cycle or an output produced twice."""
        return self.pipeline().build()

    def print_dag(self) -> str:
        """The execution levels, as ``DataflowPipeline.print_dag``; returned and printed."""
        return self.pipeline().print_dag()


class DataflowRegistry:
    """Tasks registered by hand (Tasks guide §7.2, Execution §7)."""

    def __init__(self) -> None:
        self.registrations: list[Registration] = []

    @property
    def tasks(self) -> list[Any]:
        return [reg.task for reg in self.registrations]

    def register_task(
        self,
        task: Any,
        output: str | None = None,
        inputs: Iterable[str] | None = None,
        *,
        outputs: Iterable[str] | None = None,
        kwargs: Mapping[str, JsonValue] | None = None,
        labels: Mapping[str, JsonValue] | None = None,
    ) -> Self:
        """Register ``task`` producing ``output`` (or ``outputs``, a tuple result unpacked)
        from ``inputs``; both default to its ``@pipeline_task`` annotation, then to its
        name and its parameters. ``kwargs`` are fixed arguments; ``labels`` are added to
        the node's labels (seen by ``ExecutionEngine.schedule_task``)."""
        self.registrations.append(_registration(task, output, outputs, inputs, kwargs, labels))
        return self

    def register_task_from_object(self, obj: object) -> Self:
        """Register a task by its ``@pipeline_task`` annotation; given a module, class,
        instance or iterable instead, every annotated task it holds, in definition order."""
        if isinstance(getattr(obj, "task_name", None), str):
            return self.register_task(obj)
        found = _annotated_tasks(obj)
        if not found:
            raise ValueError(f"{obj!r} is no taskiq task and holds no @pipeline_task task")
        for task in found:
            self.register_task(task)
        return self

    def build_dag(self) -> Dag:
        return DAGBuilder(self).build()

    def print_dag(self) -> str:
        return DAGBuilder(self).print_dag()


def _annotated_tasks(obj: object) -> list[Any]:
    if isinstance(obj, Mapping):
        members: list[object] = list(obj.values())
    elif isinstance(obj, Iterable) and not isinstance(obj, str | bytes):
        members = list(obj)
    else:
        members = []
        owners: list[object] = [
            *reversed(inspect.getmro(obj if isinstance(obj, type) else type(obj)))
        ]
        if not isinstance(obj, type):
            owners.append(obj)
        for owner in owners:
            members.extend(getattr(owner, "__dict__", {}).values())
    found: list[Any] = []
    for member in members:
        member = getattr(member, "__func__", member)  # staticmethod / classmethod
        if (
            isinstance(member, AsyncTaskiqDecoratedTask)
            and flow_of(member) is not None
            and not any(member is seen for seen in found)
        ):
            found.append(member)
    return found


class ExecutionEngine:
    """Runs a ``Dag`` on the fleet (in process on a non-fleet broker).

    Override ``schedule_task`` for custom routing. After ``execute``, ``pipeline_id`` is
    the run's id, ``scheduled`` the DAG as submitted and ``view`` the run's final state
    (each node's worker and GPU devices)."""

    def __init__(
        self,
        broker: AsyncBroker,
        dag: Dag,
        *,
        max_parallel: int | None = None,
        timeout: float | None = None,
    ) -> None:
        self.broker = broker
        self.dag = dag
        self.max_parallel = max_parallel
        self.timeout = timeout
        self.pipeline_id: str | None = None
        self.scheduled: Dag | None = None
        self.view: RunView | None = None

    async def schedule_task(
        self, task_node: Node, inputs: Mapping[str, Any]
    ) -> ResourceRequest | None:
        """The request ``task_node`` is submitted with; None keeps its own."""
        return task_node.request

    async def schedule(self, inputs: Mapping[str, Any]) -> Dag:
        """The DAG with every node's request as ``schedule_task`` decided it."""
        nodes: dict[str, Node] = {}
        for level in self.dag.levels():
            for node_id in level:
                node = self.dag.by_id[node_id]
                decided = await self.schedule_task(self._routing_view(node), inputs)
                if decided is not None and decided != node.request:
                    if not isinstance(decided, ResourceRequest):
                        raise TypeError(
                            f"schedule_task returned {decided!r} for node {node.id!r}; "
                            "expected a ResourceRequest or None"
                        )
                    checked = ResourceRequest.model_validate(decided.model_dump())
                    node = node.model_copy(update={"request": checked})
                nodes[node_id] = node
        return Dag(nodes=tuple(nodes[n.id] for n in self.dag.nodes), inputs=self.dag.inputs)

    async def execute(
        self, inputs: Mapping[str, Any] | None = None, **named: Any
    ) -> dict[str, Any]:
        """Run to the end; every node output by name. ``PipelineError`` (with the
        completed outputs) when the run fails; ValueError for missing inputs."""
        given = {**(inputs or {}), **named}
        dag = self.scheduled = await self.schedule(given)
        options = RunOptions(max_parallel=self.max_parallel, timeout=self.timeout)
        handle = await submit_dag(self.broker, dag, given, options)
        self.pipeline_id = handle.run_id
        view = self.view = await handle.wait()
        values = await runner_for(self.broker).outputs(view)
        outputs = {k: v for k, v in values.items() if k in dag.producers}
        if view.status != "succeeded":
            raise pipeline_error(view, outputs)
        return outputs

    def _routing_view(self, node: Node) -> Node:
        """The node with the task's own taskiq labels under its labels, fleet ones left out."""
        task = self.broker.find_task(node.task)
        extra: dict[str, JsonValue] = {}
        for key, value in (task.labels if task is not None else {}).items():
            if not key.startswith("fleet_") and isinstance(value, str | int | float | bool):
                extra[key] = value
        if not extra:
            return node
        return node.model_copy(update={"labels": {**extra, **node.labels}})
