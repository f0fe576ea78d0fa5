"""``DataflowPipeline`` and ``MapReduce``: DAGs wired by output names, run as one fleet run.

Parameters named like another task's output receive it; names nothing produces
become external inputs of ``kiq_dataflow(**inputs)``. ``.map(task, items)`` adds
one node per item and an output holding the list of their results; its
``max_parallel`` chains the items into that many lanes, so no more than that
many run at once whatever else the run does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from pydantic import JsonValue
from taskiq import AsyncBroker

from shared.dag import (
    Dag,
    Node,
    RetryPolicy,
    RunOptions,
    priority_from_labels,
    timeout_from_labels,
)
from shared.wire import label_keys
from shared.wire.runs import RunView
from taskiq_fleet.backend import Handle
from taskiq_fleet.flow.annotations import bind_inputs, flow_of, parameters_of
from taskiq_fleet.flow.errors import PipelineErrorAggregator, deadline_passed, pipeline_error
from taskiq_fleet.flow.naming import node_id, short_name, task_name
from taskiq_fleet.flow.runner import runner_for, submit_dag
from taskiq_fleet.profiles import request_of


@dataclass
class _Entry:
    task: Any
    outputs: tuple[str, ...]
    inputs: dict[str, str]
    kwargs: dict[str, JsonValue] = field(default_factory=dict)
    after: tuple[int, ...] = ()
    mode: str = "parallel"
    labels: dict[str, JsonValue] = field(default_factory=dict)


class DataflowPipeline:
    """``continue_on_error=True``: a failed task skips only what depends on it, and
    ``kiq_dataflow`` returns what was produced instead of raising; ``errors`` (a
    ``PipelineErrorAggregator``) says what failed. A timeout still raises."""

    def __init__(
        self,
        broker: AsyncBroker,
        max_parallel: int | None = None,
        *,
        timeout: float | None = None,
        continue_on_error: bool = False,
    ) -> None:
        self.broker = broker
        self.max_parallel = max_parallel
        self.timeout = timeout
        self.continue_on_error = continue_on_error
        self.errors: PipelineErrorAggregator | None = None
        """The report of the last ``kiq_dataflow``: failed steps and partial results."""
        self.retry: RetryPolicy | None = None
        """Every node's policy when set (``Pipeline.with_retry``); else each task's own."""
        self._entries: list[_Entry] = []
        self._lists: dict[str, tuple[str, ...]] = {}
        self.pipeline_id: str | None = None
        self.mode = "parallel"
        self.step_offset = 0
        """For a ``PipelineContext``: how a sequential pipeline numbers its steps."""

    @classmethod
    def from_tasks(
        cls, broker: AsyncBroker, tasks: list[Any], max_parallel: int | None = None
    ) -> Self:
        pipeline = cls(broker, max_parallel)
        for task in tasks:
            pipeline.add_dataflow_task(task)
        return pipeline

    def add_dataflow_task(
        self,
        task: Any,
        output: str | None = None,
        inputs: list[str] | Mapping[str, str] | None = None,
        *,
        outputs: list[str] | None = None,
        kwargs: dict[str, JsonValue] | None = None,
        labels: Mapping[str, JsonValue] | None = None,
    ) -> Self:
        """Add a task; outputs and inputs default to its ``@pipeline_task`` annotation,
        then to its name and its parameters without defaults. ``inputs`` names parameters
        that take the output of the same name, or maps parameter -> output name."""
        task_name(task)
        kwargs = dict(kwargs or {})
        spec = flow_of(task)
        names = (output,) if output else tuple(outputs or (spec.outputs if spec else ()))
        wanted = inputs if inputs is not None else (spec.inputs if spec else None)
        if isinstance(wanted, Mapping):
            bindings = dict(wanted)
        else:
            bindings = bind_inputs(task, None if wanted is None else list(wanted), kwargs)
        entry = _Entry(task, names or (short_name(task),), bindings, kwargs)
        entry.labels = dict(labels or {})
        self._entries.append(entry)
        return self

    def map(
        self,
        task: Any,
        items: Sequence[JsonValue],
        output: str | None = None,
        max_parallel: int | None = None,
        *,
        param: str | None = None,
    ) -> Self:
        """One node per item; ``output`` is the list of results, in item order."""
        params = parameters_of(task)[0]
        param = param or (params[0] if params else None)
        if param is None:
            raise ValueError(f"{short_name(task)} takes no parameter to map items onto")
        output = output or short_name(task)
        start = len(self._entries)
        names = []
        for i, item in enumerate(items):
            name = f"{output}__{i}"
            lane = (start + i - max_parallel,) if max_parallel and i >= max_parallel else ()
            self._entries.append(_Entry(task, (name,), {}, {param: item}, lane, "map_reduce"))
            names.append(name)
        self._lists[output] = tuple(names)
        return self

    def build(self) -> Dag:
        if not self._entries:
            raise ValueError(
                "No DAG built: add tasks with DataflowPipeline.from_tasks() or add_dataflow_task()"
            )
        produced = {name for e in self._entries for name in e.outputs} | set(self._lists)
        external: list[str] = []
        nodes = []
        for index, entry in enumerate(self._entries):
            inputs: dict[str, str | tuple[str, ...]] = {}
            for param, name in entry.inputs.items():
                inputs[param] = self._lists.get(name, name)
                if name not in produced and name not in external:
                    external.append(name)
            nodes.append(
                Node(
                    id=node_id(entry.task, index),
                    task=task_name(entry.task),
                    kwargs=entry.kwargs,
                    inputs=inputs,
                    outputs=entry.outputs,
                    after=tuple(node_id(self._entries[a].task, a) for a in entry.after),
                    request=request_of(entry.task),
                    retry=self.retry or _task_retry(entry.task),
                    timeout=timeout_from_labels(getattr(entry.task, "labels", {})),
                    priority=priority_from_labels(getattr(entry.task, "labels", {})),
                    labels={
                        label_keys.STEP: self.step_offset + index,
                        label_keys.MODE: self.mode if self.mode == "sequential" else entry.mode,
                        **entry.labels,
                    },
                )
            )
        return Dag(nodes=tuple(nodes), inputs=tuple(external))

    def print_dag(self) -> str:
        """The execution levels, as the documents show them; returned and printed."""
        dag = self.build()
        lines = [f"DAG: {len(dag.nodes)} tasks, inputs {list(dag.inputs)}"]
        for level, ids in enumerate(dag.levels()):
            described = []
            for i in ids:
                node = dag.by_id[i]
                described.append(f"{node.task.rsplit(':', 1)[-1]} -> {', '.join(node.outputs)}")
            lines.append(f"  level {level}: " + "; ".join(described))
        text = "\n".join(lines)
        print(text)
        return text

    async def kiq_dataflow(self, *args: Any, **inputs: Any) -> dict[str, Any]:
        """Run to the end; every output by name (map outputs as lists). Positional values
        fill the external inputs not given by name, in the order ``print_dag`` lists them,
        as the documents' ``kiq_dataflow(data)`` does."""
        if args:
            free = [name for name in self.build().inputs if name not in inputs]
            if len(args) > len(free):
                raise TypeError(
                    f"kiq_dataflow got {len(args)} positional values for the external inputs {free}"
                )
            inputs.update(zip(free, args, strict=False))
        view, outputs = await self._run(inputs)
        self.errors = PipelineErrorAggregator.from_run(view, outputs)
        if view.status == "succeeded":
            return outputs
        if self.continue_on_error and view.status == "failed" and not deadline_passed(view):
            return outputs
        raise pipeline_error(view, outputs)

    async def _run(self, inputs: dict[str, Any]) -> tuple[RunView, dict[str, Any]]:
        return await self._collect(await self._submit(inputs))

    async def _submit(self, inputs: dict[str, Any], run_id: str | None = None) -> Handle:
        dag = self.build()
        options = RunOptions(
            max_parallel=self.max_parallel,
            timeout=self.timeout,
            on_error="continue" if self.continue_on_error else "stop",
        )
        handle = await submit_dag(self.broker, dag, inputs, options, run_id)
        self.pipeline_id = handle.run_id
        return handle

    async def _collect(self, handle: Handle) -> tuple[RunView, dict[str, Any]]:
        """The run's end and its outputs by name (map outputs as lists)."""
        view = await handle.wait()
        values = await runner_for(self.broker).outputs(view)
        produced = {name for e in self._entries for name in e.outputs}
        outputs: dict[str, Any] = {k: v for k, v in values.items() if k in produced}
        for name, parts in self._lists.items():
            if all(p in values for p in parts):
                outputs[name] = [values[p] for p in parts]
            for part in parts:
                outputs.pop(part, None)
        return view, outputs

    async def kiq_map_reduce(
        self, items: Sequence[JsonValue], map_output: str = "mapped", reduce_output: str = "reduced"
    ) -> Any:
        """The pipeline's first task mapped over ``items``, its second reducing the list."""
        if len(self._entries) < 2:
            raise ValueError("kiq_map_reduce needs a map task and a reduce task, in that order")
        map_task, reduce_task = self._entries[0].task, self._entries[1].task
        pipeline = type(self)(self.broker, self.max_parallel, timeout=self.timeout)
        pipeline.map(map_task, items, output=map_output, max_parallel=self.max_parallel)
        param = parameters_of(reduce_task)[0][0]
        pipeline._entries.append(_Entry(reduce_task, (reduce_output,), {param: map_output}))
        try:
            return (await pipeline.kiq_dataflow())[reduce_output]
        finally:
            self.pipeline_id = pipeline.pipeline_id


def _task_retry(task: Any) -> RetryPolicy:
    """``@broker.task(retry_policy=..., max_retries=...)``; none declared: no retries."""
    return RetryPolicy.from_labels(getattr(task, "labels", {})) or RetryPolicy()


@dataclass(frozen=True)
class MapResult:
    return_value: Any
    is_err: bool = False
    pipeline_id: str | None = None
    """The fleet run: ``fleet status`` shows where each item ran."""


class MapReduce:
    """The documents' ``MapReduce.map`` / ``.reduce`` (each one fleet run)."""

    def __init__(
        self, broker: AsyncBroker, map_task: Any, reduce_task: Any, max_parallel: int | None = None
    ) -> None:
        self._pipeline = DataflowPipeline(broker, max_parallel)
        self._pipeline.add_dataflow_task(map_task).add_dataflow_task(reduce_task)

    @property
    def pipeline_id(self) -> str | None:
        """The fleet run of the last ``kiq_map_reduce``."""
        return self._pipeline.pipeline_id

    async def kiq_map_reduce(
        self, items: Sequence[JsonValue], map_output: str = "mapped", reduce_output: str = "reduced"
    ) -> Any:
        return await self._pipeline.kiq_map_reduce(items, map_output, reduce_output)

    @staticmethod
    async def map(
        broker: AsyncBroker,
        task: Any,
        items: Sequence[JsonValue],
        output: str = "mapped",
        max_parallel: int | None = None,
    ) -> MapResult:
        pipeline = DataflowPipeline(broker).map(task, items, output, max_parallel)
        value = (await pipeline.kiq_dataflow())[output]
        return MapResult(value, pipeline_id=pipeline.pipeline_id)

    @staticmethod
    async def reduce(
        broker: AsyncBroker, task: Any, items: Sequence[JsonValue], output: str = "reduced"
    ) -> MapResult:
        param = parameters_of(task)[0][0]
        pipeline = DataflowPipeline(broker)
        pipeline.add_dataflow_task(task, output=output, kwargs={param: list(items)})
        value = (await pipeline.kiq_dataflow())[output]
        return MapResult(value, pipeline_id=pipeline.pipeline_id)
