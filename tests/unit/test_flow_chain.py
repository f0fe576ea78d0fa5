"""Sequential pipelines known at ``kiq`` run as one DAG; ``Task`` finds them by id."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from taskiq import InMemoryBroker

from shared.wire import label_keys
from taskiq_fleet import Pipeline, PipelineError, PipelineTrackingManager, RetryPolicy, Task
from taskiq_fleet.broker import RESULT
from taskiq_fleet.flow.chain import compile_chain, result_of
from taskiq_fleet.flow.runner import runner_for

broker = InMemoryBroker()


@broker.task("inc")
def inc(x: int) -> int:
    return x + 1


@broker.task("square")
def square(x: int) -> int:
    return x * x


@broker.task("total")
def total(values: list[int]) -> int:
    return sum(values)


@broker.task("scaled")
def scaled(x: int, factor: int = 1) -> int:
    return x * factor


@broker.task("upto")
def upto(x: int) -> list[int]:
    return list(range(x))


@broker.task("fail")
def fail(x: int) -> int:
    raise ValueError(f"no {x}")


gates: list[asyncio.Event] = []


@pytest.fixture
def gate() -> asyncio.Event:
    """What ``slow`` waits for; one per test, made in that test's event loop."""
    gates[:] = [asyncio.Event()]
    return gates[0]


@broker.task("slow")
async def slow(x: int) -> int:
    await gates[0].wait()
    return x


def test_the_chain_is_one_dag_with_step_labels_and_map_heads_after_the_previous_step() -> None:
    pipeline = Pipeline(broker).call_next(inc).map(square, items=[1, 2, 3], max_parallel=2)
    pipeline.call_next(total)
    flow, inputs, plans = compile_chain(
        pipeline.steps, [4], {}, RetryPolicy(max_retries=2), None, broker
    )
    dag = flow.build()
    assert inputs == {"arg_x": 4}
    assert dag.inputs == ("arg_x",)
    by_id = dag.by_id
    assert [p.name for p in plans] == ["0:inc", "1:square", "2:total"]
    assert [by_id[n].labels[label_keys.STEP] for p in plans for n in p.nodes] == [0, 1, 1, 1, 2]
    first, *maps = plans[1].nodes
    assert by_id[first].after == plans[0].nodes
    assert by_id[maps[0]].after == plans[0].nodes  # the second lane's head
    assert by_id[maps[1]].after == (first,)  # max_parallel=2: the third item waits in lane 1
    (last,) = plans[2].nodes
    assert by_id[last].outputs == (RESULT,)
    assert by_id[last].inputs["values"] == tuple(f"step1__{i}" for i in range(3))
    assert all(n.retry.max_retries == 2 for n in dag.nodes)


def test_result_of_reads_a_final_value_or_a_final_maps_parts() -> None:
    assert result_of({RESULT: 5, "step0": 1}) == 5
    assert result_of({"result__1": "b", "result__0": "a", "step0": 1}) == ["a", "b"]
    assert result_of({"step0": 1}) is None


async def test_task_by_id_waits_for_the_pipeline() -> None:
    pipeline = Pipeline(broker).call_next(inc).call_next(scaled, factor=10)
    started = await pipeline.kiq(2)
    fetched = Task(task_id=started.task_id, broker=broker)
    assert (await fetched.wait_result(timeout=5)).return_value == 30
    assert (await started.wait_result(timeout=5)).return_value == 30
    assert await fetched.get_status() == "COMPLETED"
    assert await fetched.is_ready()
    view = await runner_for(broker).status(started.task_id)
    assert view is not None
    assert len(view.nodes) == 2  # one run, both steps


async def test_a_final_map_returns_its_list_to_a_fetcher() -> None:
    started = await Pipeline(broker).call_next(inc).map(square, items=[2, 3]).kiq(0)
    assert (await Task(started.task_id, broker).wait_result(timeout=5)).return_value == [4, 9]


async def test_a_failed_pipeline_by_id_reports_the_error() -> None:
    started = await Pipeline(broker).call_next(inc).call_next(fail).call_next(inc).kiq(1)
    result = await Task(started.task_id, broker).wait_result(timeout=5)
    assert result.is_err
    assert isinstance(result.error, PipelineError)
    assert "no 2" in str(result.error.view.nodes[1].error)
    with pytest.raises(PipelineError):
        await Task(started.task_id, broker).wait_result(timeout=5, raise_on_error=True)
    assert await Task(started.task_id, broker).get_status() == "FAILED"
    await started.wait_result(timeout=5)
    assert started.failed_step == "1:fail"
    assert started.partial_results == {"0:inc": 2}


async def test_status_while_running_and_for_an_unknown_id(gate: asyncio.Event) -> None:
    started = await Pipeline(broker).call_next(slow).kiq(1)
    assert await Task(started.task_id, broker).get_status() == "RUNNING"
    assert not await Task(started.task_id, broker).is_ready()
    assert await Task("unknown", broker).get_status() == "PENDING"
    gate.set()
    assert (await started.wait_result(timeout=5)).return_value == 1


async def test_the_pipeline_timeout_fails_the_run(gate: asyncio.Event) -> None:
    started = await Pipeline(broker).with_timeout(0.05).call_next(slow).kiq(1)
    result = await started.wait_result(timeout=5)
    gate.set()
    assert result.is_err
    assert started.status == "FAILED"
    assert "timed out" in str(result.error) or "timeout" in str(result.error)


async def test_tracking_records_each_steps_nodes_and_failure() -> None:
    tracking = PipelineTrackingManager().with_auto_storage(broker)
    pipeline = Pipeline(broker).with_tracking(tracking)
    started = await pipeline.call_next(inc).map(square, items=[1, 2]).call_next(fail).kiq(1)
    await started.wait_result(timeout=5)
    status = await tracking.get_status(started.task_id)
    assert status is not None
    assert status.status == "FAILED"
    assert [(s.name, s.status, s.worker) for s in status.steps] == [
        ("0:inc", "COMPLETED", "local"),
        ("1:square", "COMPLETED", "local"),
        ("2:fail", "FAILED", "local"),
    ]
    assert status.steps[2].error is not None
    assert "no [1, 4]" in status.steps[2].error


async def test_a_map_over_the_previous_result_is_driven_step_by_step_and_found_by_id() -> None:
    started = await Pipeline(broker).call_next(upto).map(square).kiq(3)
    fetched = await Task(started.task_id, broker).wait_result(timeout=5)  # before it exists
    assert fetched.return_value == [0, 1, 4]
    assert (await started.wait_result(timeout=5)).return_value == [0, 1, 4]
    assert await runner_for(broker).status(f"{started.task_id}-0", missing_ok=True) is not None


def test_steps_end_as_their_nodes_do_and_count_from_their_first_attempt() -> None:
    from shared.wire.runs import NodeView, RunUpdate, RunView
    from taskiq_fleet.flow.chain import StepPlan, StepWatcher

    def node(id: str, status: str, attempt: int, start: float, end: float | None) -> NodeView:
        return NodeView(
            id=id, task=id, status=status, attempt=attempt, started_at=start, finished_at=end
        )

    plans = [StepPlan("0:a", "step0", ("a_0",)), StepPlan("1:b", RESULT, ("b_1", "b_2"))]
    watcher = StepWatcher(plans)
    running = RunUpdate(run_id="r", status="running", nodes=(node("a_0", "running", 1, 100, None),))
    assert [(e.name, e.status) for e in watcher.feed(running)] == [("0:a", "RUNNING")]
    assert watcher.feed(running) == []  # said once
    retried = node("a_0", "succeeded", 2, 104, 105)
    (a,) = watcher.feed(RunUpdate(run_id="r", status="running", nodes=(retried,)))
    assert (a.name, a.status, a.duration_ms) == ("0:a", "COMPLETED", 5000)  # from attempt 1
    half = RunUpdate(run_id="r", status="running", nodes=(node("b_1", "succeeded", 1, 105, 106),))
    # b_2 has not ended, so neither has the step
    assert [(e.name, e.status) for e in watcher.feed(half)] == [("1:b", "RUNNING")]
    view = RunView(
        run_id="r",
        status="failed",
        nodes=(retried, node("b_1", "succeeded", 1, 105, 106), node("b_2", "failed", 1, 105, 107)),
    )
    (b,) = watcher.feed(RunUpdate(run_id="r", status="failed", run=view))
    assert (b.name, b.status, b.duration_ms) == ("1:b", "FAILED", 2000)


class StepSignal(PipelineTrackingManager):
    """Tracking that also lets a test wait for a given step record."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    async def on_step(self, pipeline_id: str, name: str, status: str, *args: Any) -> None:
        await super().on_step(pipeline_id, name, status, *args)
        self.calls.append((name, str(status)))
        self.changed.set()

    async def reached(self, name: str, status: str) -> None:
        while (name, status) not in self.calls:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)


async def test_tracking_shows_steps_as_they_start_and_end(gate: asyncio.Event) -> None:
    tracking = StepSignal().with_auto_storage(broker)
    pipeline = Pipeline(broker).with_tracking(tracking).call_next(inc).call_next(slow)
    started = await pipeline.kiq(1)
    await tracking.reached("1:slow", "RUNNING")
    status = await tracking.get_status(started.task_id)
    assert status is not None
    assert status.status == "RUNNING"
    steps = [(s.name, s.status, s.worker) for s in status.steps]
    assert steps == [("0:inc", "COMPLETED", "local"), ("1:slow", "RUNNING", "local")]
    assert status.steps[1].completed_at is None
    gate.set()
    await started.wait_result(timeout=5)
    status = await tracking.get_status(started.task_id)
    assert status is not None
    assert [(s.name, s.status) for s in status.steps] == [
        ("0:inc", "COMPLETED"),
        ("1:slow", "COMPLETED"),
    ]
    assert status.steps[1].completed_at is not None


@pytest.mark.parametrize("per_step", [False, True])
async def test_a_running_step_is_replaced_by_its_end(per_step: bool) -> None:
    tracking = StepSignal().with_auto_storage(broker)
    pipeline = Pipeline(broker).with_tracking(tracking).call_next(inc).call_next(inc)
    if per_step:
        pipeline.on_error("continue")
    started = await pipeline.kiq(1)
    assert (await started.wait_result(timeout=5)).return_value == 3
    assert ("0:inc", "RUNNING") in tracking.calls
    status = await tracking.get_status(started.task_id)
    assert status is not None
    assert [(s.name, s.status) for s in status.steps] == [
        ("0:inc", "COMPLETED"),
        ("1:inc", "COMPLETED"),
    ]


@broker.task("echo")
async def echo(x: object = None) -> object:
    return x


@pytest.mark.parametrize("per_step", [False, True])
async def test_a_parameter_with_a_default_takes_the_previous_result(per_step: bool) -> None:
    pipeline = Pipeline(broker).call_next(echo).call_next(echo)
    if per_step:
        pipeline.on_error("continue")  # driven step by step
    task = await pipeline.kiq(7)
    assert (await task.wait_result(timeout=5)).return_value == 7


@pytest.mark.parametrize("per_step", [False, True])
@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((1, 2, 3), {}, r"scaled takes 2 arguments here \(\['x', 'factor'\]\), got 3"),
        ((), {"y": 1}, r"scaled has no parameter 'y'"),
        ((1,), {"x": 2}, r"scaled got two values for 'x'"),
        ((), {"factor": 2}, r"scaled is missing \['x'\]"),
    ],
)
async def test_bad_pipeline_arguments_raise_at_kiq(
    per_step: bool, args: tuple[int, ...], kwargs: dict[str, int], error: str
) -> None:
    pipeline = Pipeline(broker).call_next(scaled).call_next(inc)
    if per_step:
        pipeline.on_error("continue")
    tracking = PipelineTrackingManager().with_auto_storage(broker)
    with pytest.raises(TypeError, match=error):
        await pipeline.with_tracking(tracking).kiq(*args, **kwargs)
    assert await tracking.list_pipelines() == []  # nothing started, nothing recorded


async def test_a_step_by_step_pipelines_timeout_cancels_its_running_step(
    gate: asyncio.Event,
) -> None:
    pipeline = Pipeline(broker).with_timeout(0.05).call_next(slow).on_error("continue")
    started = await pipeline.kiq(1)
    result = await started.wait_result(timeout=5)
    assert result.is_err
    view = await runner_for(broker).status(started.task_id)  # the only step is the last
    assert view is not None
    assert view.status == "cancelled"
