"""The documents' pipeline API in process (InMemoryBroker): no NATS, the same scheduler."""

from __future__ import annotations

import pytest
from taskiq import InMemoryBroker

from taskiq_fleet import (
    DataflowPipeline,
    MapReduce,
    Pipeline,
    PipelineContext,
    PipelineError,
    PipelineTrackingManager,
    RetryException,
    pipeline_task,
    pipeline_task_multi_output,
)
from taskiq_fleet.flow.annotations import flow_of

broker = InMemoryBroker()
calls: list[int] = []


@broker.task("load")
@pipeline_task(output="raw")
def load(source: str) -> list[int]:
    return [int(c) for c in source]


@broker.task("clean")
@pipeline_task(output="clean")
def clean(raw: list[int]) -> list[int]:
    return [x for x in raw if x]


@broker.task("stats")
@pipeline_task_multi_output(outputs=["low", "high"])
def stats(clean: list[int]) -> tuple[int, int]:
    return min(clean), max(clean)


@broker.task("square")
def square(x: int) -> int:
    calls.append(x)
    return x * x


@broker.task("total")
def total(values: list[int]) -> int:
    return sum(values)


@broker.task("boom")
@pipeline_task(output="never")
def boom(clean: list[int]) -> int:
    raise ValueError("boom")


def test_annotations_stack_in_either_order() -> None:
    spec = flow_of(stats)
    assert spec is not None
    assert spec.outputs == ("low", "high")


async def test_dataflow_wires_by_parameter_names() -> None:
    pipeline = DataflowPipeline.from_tasks(broker, [load, clean, stats])
    assert "level 2" in pipeline.print_dag()
    results = await pipeline.kiq_dataflow(source="30120")
    assert results == {"raw": [3, 0, 1, 2, 0], "clean": [3, 1, 2], "low": 1, "high": 3}


@pytest.mark.parametrize(
    ("tasks", "error"),
    [
        ([], "No DAG built"),
        ([load, load], "also produced by"),
    ],
)
def test_dataflow_errors(tasks: list[object], error: str) -> None:
    pipeline = DataflowPipeline.from_tasks(broker, tasks)
    with pytest.raises(ValueError, match=error):
        pipeline.build()


async def test_missing_external_input_is_refused() -> None:
    with pytest.raises(ValueError, match="missing external input"):
        await DataflowPipeline.from_tasks(broker, [load, clean]).kiq_dataflow()


async def test_failure_keeps_partial_results() -> None:
    pipeline = DataflowPipeline.from_tasks(broker, [load, clean, boom])
    with pytest.raises(PipelineError) as caught:
        await pipeline.kiq_dataflow(source="12")
    assert caught.value.partial_results["clean"] == [1, 2]
    assert caught.value.failed_step is not None


async def test_map_reduce() -> None:
    mapped = await MapReduce.map(broker, square, [1, 2, 3], max_parallel=1)
    assert mapped.return_value == [1, 4, 9]
    assert await MapReduce(broker, square, total).kiq_map_reduce(items=[1, 2, 3]) == 14


async def test_sequential_pipeline_passes_results_on() -> None:
    task = await Pipeline(broker).call_next(load).call_next(clean).call_next(total).kiq("1203")
    result = await task.wait_result(timeout=10)
    assert result.return_value == 6
    assert task.partial_results["1:clean"] == [1, 2, 3]


async def test_sequential_pipeline_failure() -> None:
    task = await Pipeline(broker).call_next(load).call_next(boom).kiq("12")
    result = await task.wait_result(timeout=10)
    assert result.is_err
    assert task.is_failed
    assert task.failed_step == "1:boom"
    with pytest.raises(PipelineError):
        await task.wait_result(raise_on_error=True)


seen: list[PipelineContext] = []


@broker.task("with_context")
def with_context(x: int, context: PipelineContext) -> int:
    seen.append(context)
    return x + 1


async def test_tasks_that_declare_a_context_receive_it() -> None:
    seen.clear()
    task = (
        await Pipeline(broker)
        .with_context(enable=True)
        .call_next(double_it)
        .call_next(with_context)
        .kiq(4)
    )
    assert (await task.wait_result(timeout=10)).return_value == 9
    (context,) = seen
    assert (context.step_index, context.execution_mode) == (1, "sequential")
    assert context.worker == "local"
    assert context.broker is broker
    assert context.attempt == 1


@broker.task("double_it")
def double_it(x: int) -> int:
    return 2 * x


attempts: dict[str, int] = {}


@broker.task("flaky")
@pipeline_task(output="flaky")
def flaky(key: str) -> str:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] < 3:
        raise RetryException("network error, retry allowed")
    return "ok"


@broker.task("invalid")
@pipeline_task(output="invalid")
def invalid(key: str) -> str:
    attempts[key] = attempts.get(key, 0) + 1
    raise ValueError("bad input: no retry")


async def test_retry_exception_retries_other_errors_fail_at_once() -> None:
    assert (await DataflowPipeline.from_tasks(broker, [flaky]).kiq_dataflow(key="a"))[
        "flaky"
    ] == "ok"
    assert attempts["a"] == 3
    with pytest.raises(PipelineError):
        await DataflowPipeline.from_tasks(broker, [invalid]).kiq_dataflow(key="b")
    assert attempts["b"] == 1


async def test_pipeline_with_tracking_records_status_and_steps() -> None:
    tracking = PipelineTrackingManager().with_auto_storage(broker)
    pipeline = Pipeline(broker).with_tracking(tracking).call_next(load).call_next(total)
    task = await pipeline.kiq("12")
    assert pipeline.pipeline_id is not None
    await task.wait_result(timeout=10)
    status = await tracking.get_status(pipeline.pipeline_id)
    assert status is not None
    assert status.status == "COMPLETED"
    assert [(s.name, s.status, s.worker) for s in status.steps] == [
        ("0:load", "COMPLETED", "local"),
        ("1:total", "COMPLETED", "local"),
    ]
    assert await tracking.delete_pipeline(pipeline.pipeline_id)
    assert await tracking.get_status(pipeline.pipeline_id) is None
