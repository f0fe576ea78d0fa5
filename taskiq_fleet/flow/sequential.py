"""The classic sequential ``Pipeline``: ``call_next`` steps, each given the previous result.

Each step's nodes are placed by their task's profile, so consecutive steps may run on
different hosts. A pipeline whose steps are known at ``kiq`` is one fleet run
(``chain.py``): the coordinator drives it and ``Task(task_id, broker)`` finds it from any
process. Two shapes are driven step by step from the submitting process instead, one run
per step: a ``map`` over the previous result (laid out once that result exists) and
``on_error("continue")`` (a failed step hands ``None`` on). ``kiq`` returns at once with
a ``PipelineTask``, as ``task.kiq`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from pydantic import JsonValue
from taskiq import AsyncBroker

from shared.dag import RetryPolicy
from shared.wire.runs import RunUpdate, RunView
from taskiq_fleet.backend import Handle
from taskiq_fleet.broker import RESULT
from taskiq_fleet.flow.chain import (
    StepPlan,
    StepWatcher,
    compile_chain,
    first_call,
    positional,
    result_of,
    step_name,
    step_outputs,
)
from taskiq_fleet.flow.dataflow import DataflowPipeline
from taskiq_fleet.flow.errors import (
    RUN_TIMED_OUT,
    PipelineError,
    PipelineTimeoutError,
    pipeline_error,
)
from taskiq_fleet.flow.naming import task_name
from taskiq_fleet.flow.runner import runner_for
from taskiq_fleet.flow.tracking import PipelineScope, Tracker, observe_run

OnError = Literal["stop", "continue", "retry"]


@dataclass
class _Step:
    task: Any
    kind: Literal["call", "map", "group", "after"]
    kwargs: dict[str, JsonValue] = field(default_factory=dict)
    items: list[JsonValue] | None = None
    max_parallel: int | None = None
    tasks: tuple[Any, ...] = ()
    """A group's tasks, in order."""


@dataclass(frozen=True)
class PipelineResult:
    """What ``wait_result`` returns, shaped like taskiq's ``TaskiqResult``."""

    return_value: Any
    is_err: bool = False
    error: BaseException | None = None

    def raise_for_error(self) -> Self:
        if self.error is not None:
            raise self.error
        return self


class PipelineTask:
    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.partial_results: dict[str, Any] = {}
        self.failed_step: str | None = None
        self.status = "PENDING"
        self._runner: asyncio.Task[Any] | None = None
        self._error: BaseException | None = None
        self._value: Any = None

    @property
    def is_finished(self) -> bool:
        return self._runner is not None and self._runner.done()

    @property
    def is_failed(self) -> bool:
        return self.is_finished and self._error is not None

    async def get_status(self) -> str:
        return self.status

    async def wait_result(
        self, timeout: float | None = None, raise_on_error: bool = False
    ) -> PipelineResult:
        assert self._runner is not None
        await asyncio.wait_for(asyncio.shield(self._runner), timeout)
        result = PipelineResult(self._value, self._error is not None, self._error)
        return result.raise_for_error() if raise_on_error else result


class Pipeline:
    def __init__(self, broker: AsyncBroker) -> None:
        self.broker = broker
        self.steps: list[_Step] = []
        self.retry: RetryPolicy | None = None
        """Every step's policy when set; else each task's own (``@broker.task(...)``)."""
        self.error_mode: OnError = "stop"
        self.timeout: float | None = None
        self.context = False
        self.tracking: Tracker | None = None
        self.pipeline_id: str | None = None

    def call_next(self, task: Any, **kwargs: JsonValue) -> Self:
        self.steps.append(_Step(task, "call", dict(kwargs)))
        return self

    def group(self, *tasks: Any) -> Self:
        """One step of tasks that run at the same time (Execution §13: parallelism in a
        sequential pipeline), each given the previous step's result, or the pipeline's
        arguments when it comes first; its result is the list of theirs, in this order.
        ``group(a, b)`` and ``group([a, b])`` are the same."""
        if len(tasks) == 1 and isinstance(tasks[0], list | tuple):
            tasks = tuple(tasks[0])
        if not tasks:
            raise ValueError("group() needs at least one task")
        for task in tasks:
            task_name(task)
        self.steps.append(_Step(tasks[0], "group", tasks=tasks))
        return self

    def call_after(self, task: Any, **kwargs: JsonValue) -> Self:
        """A side effect after the step before it (Tasks guide §10: keep tasks pure, put
        side effects in ``.call_after()``): ``task`` gets that step's result, and so does
        the next step, or the pipeline's result: what ``task`` returns is only kept in
        ``partial_results``. It runs before the next step, and fails the pipeline as any
        step does."""
        if not self.steps:
            raise ValueError("call_after() follows a step: add one with call_next() first")
        task_name(task)
        self.steps.append(_Step(task, "after", dict(kwargs)))
        return self

    def map(
        self, task: Any, items: list[JsonValue] | None = None, max_parallel: int | None = None
    ) -> Self:
        """Run ``task`` on each item (default: on each element of the previous result)."""
        self.steps.append(_Step(task, "map", items=items, max_parallel=max_parallel))
        return self

    def with_retry(
        self, max_attempts: int = 3, delay: float = 0.0, backoff: float = 1.0, jitter: float = 0.0
    ) -> Self:
        """Every step's policy, over the tasks' own; ``jitter`` moves each delay by up to
        that share of itself, so retries of many nodes do not arrive together."""
        self.retry = RetryPolicy(
            max_retries=max(0, max_attempts - 1), delay=delay, backoff=backoff, jitter=jitter
        )
        return self

    def on_error(self, mode: OnError) -> Self:
        if mode not in ("stop", "continue", "retry"):
            raise ValueError(f"on_error takes 'stop', 'continue' or 'retry', not {mode!r}")
        self.error_mode = mode
        if mode == "retry" and (self.retry is None or self.retry.max_retries == 0):
            self.retry = RetryPolicy(max_retries=2)
        return self

    def with_timeout(self, seconds: float) -> Self:
        if seconds <= 0:
            raise ValueError(f"a timeout must be > 0 seconds, got {seconds}")
        self.timeout = seconds
        return self

    def with_tracking(self, tracking: Tracker) -> Self:
        """Record status and steps in ``tracking`` (a ``PipelineTrackingManager``)."""
        self.tracking = tracking
        return self

    def with_context(self, enable: bool = True) -> Self:
        self.context = enable
        return self

    async def kiq(self, *args: JsonValue, **kwargs: JsonValue) -> PipelineTask:
        """Start the pipeline; bad arguments or a bad pipeline raise here, before any
        tracking record or run exists."""
        if not self.steps:
            raise ValueError("the pipeline has no steps: add them with call_next() or map()")
        task = PipelineTask(uuid.uuid4().hex)
        driven = self.error_mode == "continue" or any(
            s.kind == "map" and s.items is None for s in self.steps
        )
        if driven:
            head = self.steps[0]
            if head.kind != "map":
                for member in head.tasks or (head.task,):
                    first_call(member, head.kwargs, args, kwargs)
        else:
            flow, inputs, plans = compile_chain(
                self.steps, args, dict(kwargs), self.retry, self.timeout, self.broker
            )
            flow.build()
        self.pipeline_id = task.task_id
        await PipelineScope(self.tracking, task.task_id).created()
        if driven:
            task._runner = asyncio.create_task(self._drive(task, list(args), dict(kwargs)))
            return task
        handle = await flow._submit(inputs, run_id=task.task_id)
        updates: asyncio.Queue[RunUpdate] = asyncio.Queue()
        handle.on_update(updates.put_nowait)
        if handle.view is not None:  # it ended before the listener was added
            updates.put_nowait(
                RunUpdate(run_id=handle.run_id, status=handle.view.status, run=handle.view)
            )
        task._runner = asyncio.create_task(self._run_chain(task, flow, handle, plans, updates))
        return task

    async def _run_chain(
        self,
        task: PipelineTask,
        flow: DataflowPipeline,
        handle: Handle,
        plans: list[StepPlan],
        updates: asyncio.Queue[RunUpdate],
    ) -> None:
        task.status = "RUNNING"
        track = PipelineScope(self.tracking, task.task_id, self.broker)
        await track.start()
        watcher = StepWatcher(plans)
        try:
            ended = False
            while not ended:
                update = await updates.get()
                ended = update.run is not None
                for end in watcher.feed(update):
                    await track.record(end.name, end.status, end.duration_ms, end.worker, end.error)
                    if end.status == "FAILED" and task.failed_step is None:
                        task.failed_step = end.name
            view, outputs = await flow._collect(handle)
        except asyncio.CancelledError:
            await track.end("CANCELLED")
            raise
        task.partial_results = step_outputs(plans, outputs)
        if view.status == "succeeded":
            task._value = result_of(outputs)
            task.status = "COMPLETED"
            await track.end("COMPLETED")
            return
        task._error = pipeline_error(view, task.partial_results)
        task.status = "CANCELLED" if view.status == "cancelled" else "FAILED"
        await track.end(task.status, task._error)

    async def _drive(
        self, task: PipelineTask, args: list[JsonValue], kwargs: dict[str, Any]
    ) -> None:
        task.status = "RUNNING"
        track = PipelineScope(self.tracking, task.task_id, self.broker)
        await track.start()
        value: Any = None
        try:
            async with asyncio.timeout(self.timeout):
                for index, step in enumerate(self.steps):
                    name = step_name(index, *(step.tasks or (step.task,)))
                    given = args if index == 0 else None
                    try:
                        async with track.step(name):
                            out = await self._step(task.task_id, index, step, value, given, kwargs)
                    except PipelineError:
                        task.failed_step = name
                        if self.error_mode != "continue":
                            raise
                        out = None
                    else:
                        task.partial_results[name] = out
                    if step.kind != "after":
                        value = out
        except PipelineError as exc:
            await self._failed(task, track, exc)
            return
        except TimeoutError:  # this driver's own deadline
            why = f"{RUN_TIMED_OUT} after {self.timeout:g} s"
            view = RunView(run_id=task.task_id, status="failed", error=why)
            await self._failed(task, track, PipelineTimeoutError(view, dict(task.partial_results)))
            return
        except asyncio.CancelledError:
            await track.end("CANCELLED")
            raise
        task._value = value
        task.status = "COMPLETED"
        await track.end("COMPLETED")

    @staticmethod
    async def _failed(task: PipelineTask, track: PipelineScope, error: PipelineError) -> None:
        task._error = error
        task.status = "FAILED"
        await track.end("FAILED", error)

    async def _step(
        self,
        pipeline_id: str,
        index: int,
        step: _Step,
        previous: Any,
        args: list[JsonValue] | None,
        kwargs: dict[str, Any],
    ) -> Any:
        flow = DataflowPipeline(self.broker)
        observe_run(flow)
        flow.retry = self.retry
        flow.mode, flow.step_offset = "sequential", index
        if step.kind == "map":
            items = step.items if step.items is not None else list(previous or [])
            flow.map(step.task, items, output=RESULT, max_parallel=step.max_parallel)
        elif step.kind == "group":
            names = tuple(f"{RESULT}__{j}" for j in range(len(step.tasks)))
            for member, name in zip(step.tasks, names, strict=True):
                given = _arguments(member, {}, previous, args, kwargs)
                flow.add_dataflow_task(member, output=name, inputs={}, kwargs=given)
            flow._lists[RESULT] = names
        else:
            given = _arguments(step.task, step.kwargs, previous, args, kwargs)
            flow.add_dataflow_task(step.task, output=RESULT, inputs={}, kwargs=given)
        # The last step's run carries the pipeline's id, so Task(task_id) finds its end:
        # the last step that gives the pipeline its value, not a side effect after it.
        last = index == max(i for i, s in enumerate(self.steps) if s.kind != "after")
        handle = await flow._submit({}, run_id=pipeline_id if last else f"{pipeline_id}-{index}")
        try:
            view, outputs = await flow._collect(handle)
        except asyncio.CancelledError:  # the pipeline's timeout, or its driver stopped
            with contextlib.suppress(Exception):
                await handle.cancel()  # its step must not run on unobserved
            raise
        if view.status != "succeeded":
            raise pipeline_error(view, outputs)
        return outputs[RESULT]


def _arguments(
    task: Any,
    fixed: dict[str, JsonValue],
    previous: Any,
    args: list[JsonValue] | None,
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    """A driven step's arguments: the pipeline's own for the first step, else the previous
    result in its first parameter not given."""
    given: dict[str, Any] = dict(fixed)
    if args is not None:
        given.update(first_call(task, given, args, kwargs))
        return given
    free = [p for p in positional(task) if p not in given]
    if free:
        given[free[0]] = previous
    return given


SequentialPipeline = Pipeline
"""The documents' name for the classic ``Pipeline`` (Execution guide §1.1, §13)."""

_STATUS = {"running": "RUNNING", "succeeded": "COMPLETED", "cancelled": "CANCELLED"}


class Task:
    """A pipeline (one run as one DAG) or a ``kiq``'d task found by its id, from any process:
    the documents' ``Task(task_id=..., broker=...)`` (Execution §3.3)."""

    def __init__(self, task_id: str, broker: AsyncBroker) -> None:
        self.task_id = task_id
        self.broker = broker

    async def get_status(self) -> str:
        """PENDING until the coordinator knows the run, then RUNNING, COMPLETED, FAILED or
        CANCELLED."""
        view = await runner_for(self.broker).status(self.task_id, missing_ok=True)
        return "PENDING" if view is None else _STATUS.get(view.status, "FAILED")

    async def is_ready(self) -> bool:
        return (await self.get_status()) not in ("PENDING", "RUNNING")

    async def wait_result(
        self, timeout: float | None = None, raise_on_error: bool = False
    ) -> PipelineResult:
        """The last step's value; ``TimeoutError`` after ``timeout`` seconds."""
        runner = runner_for(self.broker)
        handle = await runner.follow(self.task_id)
        view = await handle.wait(timeout)
        outputs = await runner.outputs(view)
        if view.status == "succeeded":
            return PipelineResult(result_of(outputs))
        error = pipeline_error(view, dict(outputs))
        result = PipelineResult(None, True, error)
        return result.raise_for_error() if raise_on_error else result
