"""Document 004, the Execution guide: its examples, run with only their imports changed.

Imports: ``taskiq_flow``, ``taskiq_flow.dataflow``, ``taskiq_flow.middleware`` and
``taskiq_flow.optimization.parallel`` -> ``taskiq_fleet``; ``from taskiq import Task``
(taskiq has none) -> ``taskiq_fleet``. ``TaskiqError`` and ``PipelineError``, used but not
imported by the document, come from ``taskiq.exceptions`` and ``taskiq_fleet``. The broker is
taskiq's ``InMemoryBroker``: pipelines run in process on a ``LocalFleet``. Names the document
leaves undefined (``pipeline``, ``data``, ``task1`` ...) get the smallest stand-in next to the
example, marked as such. Scaffolding shared with the other documents' tests (the ``broker``
fixture, ``fleet_of``, ``Gauge``, common stand-ins) is in ``tests/unit/documents_support.py``.

Inventory (behaviour: a test runs it; prose and config: nothing of ours to run). Each test
is named ``test_<section>_...``.

| section | example | kind |
| --- | --- | --- |
| 1.1 | ``Pipeline(broker).call_next(task1)...`` | behaviour |
| 1.2 | extract -> (tag & embed), ``DataflowPipeline.from_tasks`` | behaviour |
| 1.3 | ``MapReduce.map(..., output="processed", max_parallel=10)`` | behaviour |
| 1.3 | ``max_parallel`` bullets | prose |
| 2.1 | ``task = await pipeline.kiq(...)``; ``wait_result()`` | behaviour |
| 2.2 | ``pipeline.kiq_dataflow(track_paths=[...])`` | behaviour |
| 2.3 | ``pipeline.kiq_map_reduce(items=..., ...)`` | behaviour |
| 3.1 | blocking wait, ``print(result.return_value)`` | behaviour |
| 3.1 | options ``timeout=30`` / ``raise_on_error=True`` | prose; raise_on_error tested |
| 3.2 | polling ``task.is_finished`` / ``task.get_status()`` | behaviour |
| 3.3 | ``Task(task_id="abc123", broker=broker)`` | behaviour |
| 4.1 | ``pipeline.on_error("continue")`` | behaviour |
| 4.1 | ``pipeline.with_retry(max_attempts=3, delay=5, backoff=2)`` | behaviour |
| 4.2 | ``try: ... wait_result() except TaskiqError`` | behaviour, xfail |
| 4.3 | ``except PipelineError: result.partial_results`` | behaviour, xfail |
| 5 | ``with_timeout(60)``, ``@broker.task(timeout=30)`` | behaviour |
| 6 | ``PipelineContext`` parameter, ``with_context(enable=True)`` | behaviour |
| 6 | context field table | prose |
| 7 | ``DataflowRegistry`` -> ``build_dag`` -> ``ExecutionEngine`` | behaviour |
| 8.1 | sequential result shape | behaviour |
| 8.2 | ``pipeline.kiq_dataflow(input_data)`` result shape | behaviour |
| 8.3 | ``MapReduce.map`` / ``MapReduce.reduce`` result shapes | behaviour |
| 9 | tracking: ``with_tracking``, ``get_status``, steps | behaviour |
| 9 | status table | prose |
| 10.1 | ``logging.basicConfig`` / ``getLogger("taskiq_flow")`` | config |
| 10.2 | ``pipeline.print_dag()`` | behaviour |
| 10.3 | ``debug_task(data, context: PipelineContext)`` | behaviour |
| 10.4 | ``DebugMiddleware(PipelineMiddleware)`` | behaviour |
| 11.1 | ``set_max_parallel_tasks(20)``: stored, executors clamp | behaviour |
| 11.1 | ``set_max_parallel_tasks(20)``: caps running tasks | behaviour |
| 11.2 | ``pipeline.map(process_item, items, max_parallel=8)`` | behaviour |
| 11.3 | ``split_into_chunks`` + ``kiq_dataflow(chunk)`` | behaviour |
| 12, 13 | pitfalls and summary tables | prose |

26 behaviour examples (11.1 has two tests) and the inline ``raise_on_error=True``: 28 tests,
2 of them xfail.
"""

import asyncio
import re
from typing import Any

import pytest
from taskiq import InMemoryBroker

from taskiq_fleet import RetryPolicy, get_max_parallel_tasks
from taskiq_fleet.flow.runner import runner_for
from tests.unit.documents_support import (
    BIG_WORKER,
    Gauge,
    doubling_pipeline,
    fleet_of,
    roomy_parallelism,
)
from tests.unit.documents_support import broker as broker  # a fixture
from tests.unit.documents_support import no_global_cap as no_global_cap  # a fixture

pytestmark = pytest.mark.usefixtures("no_global_cap")

WAIT_RESULT_DOES_NOT_RAISE = (
    "wait_result() returns an error result (is_err=True, no exception) unless "
    "raise_on_error=True, like taskiq's and as 3.1 describes it; so the example's except "
    "block never runs and it prints nothing"
)


def failing_pipeline(broker: InMemoryBroker) -> tuple[Any, str]:
    """Stand-ins ``pipeline`` and ``data``: two steps, the second raises; the first, load,
    gives ``[1, 2]`` of the data ``"12"``."""
    from taskiq_fleet import Pipeline

    @broker.task
    def load(source: str) -> list[int]:
        return [int(c) for c in source]

    @broker.task
    def boom(values: list[int]) -> int:
        raise ValueError("disk full")

    return Pipeline(broker).call_next(load).call_next(boom), "12"


def audio_dataflow(broker: InMemoryBroker) -> Any:
    """Stand-in ``pipeline``: the audio dataflow of 1.2, with bodies."""
    from taskiq_fleet import DataflowPipeline, pipeline_task

    @broker.task
    @pipeline_task(output="features")
    def extract(tracks: list[str]) -> dict[str, int]:
        return {track: len(track) for track in tracks}

    @broker.task
    @pipeline_task(output="tags")
    def tag(features: dict[str, int]) -> list[str]:
        return sorted(features)

    @broker.task
    @pipeline_task(output="embedding")
    def embed(features: dict[str, int]) -> list[int]:
        return sorted(features.values())

    return DataflowPipeline.from_tasks(broker, [extract, tag, embed])


def squaring_and_summing(broker: InMemoryBroker) -> tuple[Any, Any]:
    """Stand-in tasks ``square`` (a number's square) and ``total`` (the sum of a list)."""

    @broker.task
    def square(x: int) -> int:  # stand-in
        return x * x

    @broker.task
    def total(values: list[int]) -> int:  # stand-in
        return sum(values)

    return square, total


# -- 1. Execution models -------------------------------------------------------------------


async def test_1_1_sequential_execution(broker: InMemoryBroker) -> None:
    from taskiq_fleet import Pipeline

    order: list[str] = []

    @broker.task
    def task1(x: int) -> int:  # stand-in
        order.append("task1")
        return x + 1

    @broker.task
    def task2(x: int) -> int:  # stand-in
        order.append("task2")
        return x * 10

    @broker.task
    def task3(x: int) -> int:  # stand-in
        order.append("task3")
        return x - 1

    pipeline = Pipeline(broker).call_next(task1).call_next(task2).call_next(task3)
    # Execution order: task1 → task2 → task3 (synchronously)

    task = await pipeline.kiq(1)
    assert (await task.wait_result(timeout=30)).return_value == 19  # ((1 + 1) * 10) - 1
    assert order == ["task1", "task2", "task3"]


async def test_1_2_parallel_execution(
    broker: InMemoryBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskiq_fleet import DataflowPipeline, pipeline_task

    broker_task = broker.task  # stand-in: the document writes `@broker_task` once, a typo

    @broker.task
    @pipeline_task(output="features")
    def extract(tracks):  # type: ignore[no-untyped-def]
        return {track: len(track) for track in tracks}  # stand-in for `...`

    @broker_task
    @pipeline_task(output="tags")
    def tag(features):  # type: ignore[no-untyped-def]
        # Runs after extract
        return sorted(features)  # stand-in for `...`

    @broker.task
    @pipeline_task(output="embedding")
    def embed(features):  # type: ignore[no-untyped-def]
        # Also runs after extract, in parallel with tag
        return sorted(features.values())  # stand-in for `...`

    pipeline = DataflowPipeline.from_tasks(broker, [extract, tag, embed])
    # DAG: extract → (tag & embed in parallel)

    text = pipeline.print_dag()
    assert "level 0: extract -> features" in text
    assert "level 1: tag -> tags; embed -> embedding" in text
    assert capsys.readouterr().out == text + "\n"
    assert await pipeline.kiq_dataflow(tracks=["a.mp3", "bb.mp3"]) == {
        "features": {"a.mp3": 5, "bb.mp3": 6},
        "tags": ["a.mp3", "bb.mp3"],
        "embedding": [5, 6],
    }


async def test_1_3_map_reduce(broker: InMemoryBroker) -> None:
    from taskiq_fleet import MapReduce

    gauge = Gauge()

    @gauge.task(broker)
    def process_item(item: int) -> int:  # stand-in
        return item * 10

    items_list = list(range(100))  # stand-in

    async with fleet_of(broker, BIG_WORKER):
        # Process 100 items with max 10 concurrent workers
        result = await MapReduce.map(
            broker,
            process_item,
            items=items_list,
            output="processed",
            max_parallel=10,  # controls concurrency level
        )

    assert result.return_value == [item * 10 for item in items_list]
    assert gauge.peak <= 10


# -- 2. Starting a pipeline ----------------------------------------------------------------


async def test_2_1_fire_and_forget(broker: InMemoryBroker) -> None:
    pipeline = doubling_pipeline(broker)  # stand-in
    initial_input = 21  # stand-in

    task = await pipeline.kiq(initial_input)
    # Do other things...
    result = await task.wait_result()  # blocks until complete

    assert result.return_value == 42
    assert task.is_finished
    assert isinstance(task.task_id, str)
    assert task.task_id == pipeline.pipeline_id  # the id to check its status by later


async def test_2_2_kiq_dataflow(broker: InMemoryBroker) -> None:
    from taskiq_fleet import DataflowPipeline, pipeline_task

    @broker.task
    @pipeline_task(output="durations")
    def measure(track_paths: list[str]) -> list[int]:  # stand-in
        return [len(path) for path in track_paths]

    @broker.task
    @pipeline_task(output="longest")
    def longest(durations: list[int]) -> int:  # stand-in
        return max(durations)

    pipeline = DataflowPipeline.from_tasks(broker, [measure, longest])  # stand-in

    results = await pipeline.kiq_dataflow(track_paths=["a.mp3", "b.mp3"])
    # Returns: dict mapping output names → values

    assert results == {"durations": [5, 5], "longest": 5}


async def test_2_3_kiq_map_reduce(broker: InMemoryBroker) -> None:
    from taskiq_fleet import DataflowPipeline

    square, total = squaring_and_summing(broker)  # stand-ins

    pipeline = DataflowPipeline.from_tasks(broker, [square, total])  # stand-in
    items = [1, 2, 3, 4]  # stand-in

    final = await pipeline.kiq_map_reduce(
        items=items, map_output="processed", reduce_output="final"
    )

    assert final == 30


# -- 3. Waiting for results ----------------------------------------------------------------


async def test_3_1_blocking_wait(
    broker: InMemoryBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = doubling_pipeline(broker)  # stand-in
    data = 4  # stand-in

    task = await pipeline.kiq(data)
    result = await task.wait_result()  # blocks
    print(result.return_value)

    assert capsys.readouterr().out == "8\n"


async def test_3_1_raise_on_error(broker: InMemoryBroker) -> None:
    """``wait_result(raise_on_error=True)`` re-raises a task's failure; in taskiq-fleet it
    arrives as ``PipelineError`` (naming the task's error), as for every pipeline."""
    from taskiq_fleet import PipelineError

    pipeline, data = failing_pipeline(broker)
    task = await pipeline.kiq(data)
    with pytest.raises(PipelineError, match="disk full"):
        await task.wait_result(raise_on_error=True)


async def test_3_2_polling(broker: InMemoryBroker, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = doubling_pipeline(broker)  # stand-in
    data = 4  # stand-in

    task = await pipeline.kiq(data)

    # Check periodically without blocking
    while not task.is_finished:
        await asyncio.sleep(0.5)
        status = await task.get_status()
        print(f"Status: {status}")

    lines = capsys.readouterr().out.splitlines()
    assert lines
    assert set(lines) <= {"Status: RUNNING", "Status: COMPLETED"}
    assert lines[-1] == "Status: COMPLETED"
    assert (await task.wait_result()).return_value == 8


async def test_3_3_fetch_by_task_id(broker: InMemoryBroker) -> None:
    from taskiq_fleet import DataflowPipeline

    @broker.task
    def double(x: int) -> int:  # stand-in
        return 2 * x

    # stand-in for "another process": it started a pipeline whose id is abc123
    started = DataflowPipeline(broker).add_dataflow_task(double, output="result").build()
    await runner_for(broker).submit(started, {"x": 21}, run_id="abc123")

    from taskiq_fleet import Task

    task = Task(task_id="abc123", broker=broker)
    result = await task.wait_result()

    assert result.return_value == 42
    assert await task.get_status() == "COMPLETED"


# -- 4. Error handling ---------------------------------------------------------------------


async def test_4_1_on_error_continue(broker: InMemoryBroker) -> None:
    from taskiq_fleet import Pipeline

    @broker.task
    def fails(x: int) -> int:  # stand-in
        raise ValueError("bad input")

    ran: list[int | None] = []

    @broker.task
    def after(previous: int | None) -> str:  # stand-in
        ran.append(previous)
        return f"ran after a step that gave {previous}"

    pipeline = Pipeline(broker)
    # Configure to continue despite errors
    pipeline.on_error("continue")  # options: "stop", "continue", "retry"

    task = await pipeline.call_next(fails).call_next(after).kiq(1)
    result = await task.wait_result(timeout=30)
    assert not result.is_err
    assert result.return_value == "ran after a step that gave None"
    assert task.failed_step == "0:fails"
    assert ran == [None]

    # The default stops at the failed step: the remaining ones do not run.
    stopping = await Pipeline(broker).call_next(fails).call_next(after).kiq(1)
    assert (await stopping.wait_result(timeout=30)).is_err
    assert ran == [None]


async def test_4_1_with_retry(broker: InMemoryBroker) -> None:
    from taskiq_fleet import Pipeline

    @broker.task
    def double(x: int) -> int:  # stand-in
        return 2 * x

    pipeline = Pipeline(broker)
    # Or use a retry policy (see Retry Guide)
    pipeline.with_retry(max_attempts=3, delay=5, backoff=2)

    # 3 attempts: 2 retries, waiting 5 s then 10 s
    assert pipeline.retry == RetryPolicy(max_retries=2, delay=5, backoff=2)
    assert [pipeline.retry.delay_for(n) for n in (1, 2)] == [5, 10]
    task = await pipeline.call_next(double).kiq(2)
    assert (await task.wait_result(timeout=30)).return_value == 4


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=WAIT_RESULT_DOES_NOT_RAISE)
async def test_4_2_pipeline_level_errors(
    broker: InMemoryBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskiq.exceptions import TaskiqError

    pipeline, data = failing_pipeline(broker)  # stand-ins

    try:
        result = await pipeline.kiq(data)
        output = await result.wait_result()  # noqa: F841
    except TaskiqError as exc:
        print(f"Pipeline failed: {exc}")
        # Access partial results if any
        if result.is_failed:
            print(f"Failed at step: {result.failed_step}")

    out = capsys.readouterr().out
    assert out.startswith("Pipeline failed: ")
    assert "Failed at step: " in out
    assert "boom" in out


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=WAIT_RESULT_DOES_NOT_RAISE)
async def test_4_3_partial_results(
    broker: InMemoryBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskiq_fleet import PipelineError

    pipeline, data = failing_pipeline(broker)  # stand-ins

    result = await pipeline.kiq(data)
    try:
        output = await result.wait_result()  # noqa: F841
    except PipelineError:
        # Some steps succeeded before failure
        partial = result.partial_results  # dict of completed outputs
        print(f"Partial: {partial}")

    out = capsys.readouterr().out
    assert out.startswith("Partial: {")
    assert "[1, 2]" in out  # what the first step, load, gave


# -- 5. Timeouts ---------------------------------------------------------------------------


async def test_5_timeouts(broker: InMemoryBroker) -> None:
    from taskiq_fleet import DataflowPipeline, Pipeline

    pipeline = Pipeline(broker)

    # Global timeout for entire pipeline (seconds)
    pipeline.with_timeout(60)

    # Or per-task timeout via taskiq task decorator
    @broker.task(timeout=30)
    def slow_task():  # type: ignore[no-untyped-def]
        return "finished in time"  # stand-in for `...`

    assert pipeline.timeout == 60
    (node,) = DataflowPipeline.from_tasks(broker, [slow_task]).build().nodes
    assert node.timeout == 30  # a pipeline node keeps the task's own timeout
    task = await pipeline.call_next(slow_task).kiq()
    assert (await task.wait_result()).return_value == "finished in time"


# -- 6. Execution context ------------------------------------------------------------------


async def test_6_execution_context(
    broker: InMemoryBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskiq_fleet import Pipeline, PipelineContext

    contexts: list[PipelineContext] = []  # scaffolding: the context the task was given

    @broker.task
    async def my_task(data: str, context: PipelineContext):  # type: ignore[no-untyped-def]
        contexts.append(context)
        print(f"Pipeline ID: {context.pipeline_id}")
        print(f"Step number: {context.step_index}")
        print(f"Task ID: {context.task_id}")
        return data.upper()

    pipeline = Pipeline(broker).with_context(enable=True)

    task = await pipeline.call_next(my_task).kiq("abc")
    assert (await task.wait_result(timeout=30)).return_value == "ABC"
    (context,) = contexts
    assert capsys.readouterr().out == (
        f"Pipeline ID: {context.pipeline_id}\nStep number: 0\nTask ID: {context.task_id}\n"
    )
    assert context.pipeline_id == pipeline.pipeline_id  # the pipeline instance's id
    assert context.task_id
    assert context.execution_mode == "sequential"
    assert context.broker is broker
    assert context.started_at is not None


# -- 7. Custom execution engines -----------------------------------------------------------


async def test_7_custom_execution_engine(
    broker: InMemoryBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskiq_fleet import DataflowRegistry, ExecutionEngine

    @broker.task
    def load(source_file: str) -> list[str]:  # stand-in
        return [f"{source_file}:{i}" for i in range(2)]

    @broker.task
    def process(raw: list[str]) -> list[str]:  # stand-in
        return [r.upper() for r in raw]

    @broker.task
    def save(clean: list[str]) -> int:  # stand-in
        return len(clean)

    # Build registry manually
    registry = DataflowRegistry()
    registry.register_task(load, output="raw", inputs=[])
    registry.register_task(process, output="clean", inputs=["raw"])
    registry.register_task(save, output="saved", inputs=["clean"])

    # Build DAG
    dag = registry.build_dag()

    # Create execution engine
    engine = ExecutionEngine(broker, dag)

    # Execute with custom inputs
    results = await engine.execute(inputs={"source_file": "data.csv"})
    print(results)  # {"raw": ..., "clean": ..., "saved": ...}

    expected = {
        "raw": ["data.csv:0", "data.csv:1"],
        "clean": ["DATA.CSV:0", "DATA.CSV:1"],
        "saved": 2,
    }
    assert results == expected
    assert capsys.readouterr().out == f"{expected}\n"
    assert dag.inputs == ("source_file",)
    assert [len(level) for level in dag.levels()] == [1, 1, 1]


# -- 8. Result shapes ----------------------------------------------------------------------


async def test_8_1_sequential_results(broker: InMemoryBroker) -> None:
    from taskiq_fleet import Pipeline

    @broker.task
    def length(x: list[int]) -> int:  # stand-in
        return len(x)

    @broker.task
    def repeat(n: int) -> list[int]:  # stand-in
        return [n - 1] * n

    pipeline = Pipeline(broker).call_next(length).call_next(repeat)  # stand-in
    input = [7, 8, 9, 10]  # stand-in

    task = await pipeline.kiq(input)
    result = await task.wait_result()
    # result.return_value is the final output after all steps

    assert result.return_value == [3, 3, 3, 3]


async def test_8_2_dataflow_results(broker: InMemoryBroker) -> None:
    pipeline = audio_dataflow(broker)  # stand-in
    input_data = ["a.mp3", "bb.mp3"]  # stand-in

    result = await pipeline.kiq_dataflow(input_data)
    # Returns a dict mapping each output name to its value

    assert set(result) == {"features", "tags", "embedding"}


async def test_8_3_map_reduce_results(
    broker: InMemoryBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskiq_fleet import MapReduce

    square, total = squaring_and_summing(broker)  # stand-ins

    mapped = await MapReduce.map(broker, square, items=[1, 2, 3])  # `...`: stand-in arguments
    print(mapped.return_value)  # List of mapped results

    reduced = await MapReduce.reduce(broker, total, items=[1, 4, 9])  # `...`: stand-in arguments
    print(reduced.return_value)  # Final aggregated result

    assert capsys.readouterr().out == "[1, 4, 9]\n14\n"


# -- 9. Inspecting pipeline state ----------------------------------------------------------


async def test_9_inspecting_pipeline_state(
    broker: InMemoryBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskiq_fleet import Pipeline, PipelineTrackingManager

    @broker.task
    def load(source: str) -> list[int]:  # stand-in
        return [int(c) for c in source]

    @broker.task
    def total(values: list[int]) -> int:  # stand-in
        return sum(values)

    data = "123"  # stand-in

    tracking = PipelineTrackingManager().with_auto_storage(broker)
    pipeline = Pipeline(broker).with_tracking(tracking)
    pipeline.call_next(load).call_next(total)  # stand-in steps

    task = await pipeline.kiq(data)

    # Get detailed status
    status = await tracking.get_status(pipeline.pipeline_id)
    print(f"Status: {status.status}")  # PENDING, RUNNING, COMPLETED, FAILED
    print(f"Steps: {len(status.steps)}")  # Number of completed steps
    print(f"Started: {status.started_at}")
    print(f"Completed: {status.completed_at}")

    # Get step-by-step history
    for step in status.steps:
        print(f"  {step.name}: {step.status} ({step.duration_ms}ms)")

    # Read right after kiq: the pipeline has not finished.
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] in ("Status: PENDING", "Status: RUNNING")
    assert lines[3] == "Completed: None"
    assert (await task.wait_result(timeout=30)).return_value == 6

    # The same lines once it has: every step, COMPLETED.
    status = await tracking.get_status(pipeline.pipeline_id)
    print(f"Status: {status.status}")  # PENDING, RUNNING, COMPLETED, FAILED
    print(f"Steps: {len(status.steps)}")  # Number of completed steps
    for step in status.steps:
        print(f"  {step.name}: {step.status} ({step.duration_ms}ms)")
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["Status: COMPLETED", "Steps: 2"]
    assert [re.sub(r"\(\d+ms\)", "(Nms)", line) for line in lines[2:]] == [
        "  0:load: COMPLETED (Nms)",
        "  1:total: COMPLETED (Nms)",
    ]
    assert status.started_at is not None
    assert status.completed_at is not None
    assert status.completed_at >= status.started_at


# -- 10. Debugging -------------------------------------------------------------------------


async def test_10_2_print_dag(broker: InMemoryBroker, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = audio_dataflow(broker)  # stand-in

    pipeline.print_dag()
    # Shows execution levels and dependencies

    assert capsys.readouterr().out.splitlines() == [
        "DAG: 3 tasks, inputs ['tracks']",
        "  level 0: extract -> features",
        "  level 1: tag -> tags; embed -> embedding",
    ]


async def test_10_3_inspect_task_arguments(
    broker: InMemoryBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskiq_fleet import Pipeline, PipelineContext

    @broker.task
    async def debug_task(data, context: PipelineContext):  # type: ignore[no-untyped-def]
        print(f"Received: {data}")
        print(f"Context: pipeline={context.pipeline_id}, step={context.step_index}")
        return data

    task = await Pipeline(broker).with_context(enable=True).call_next(debug_task).kiq("x")
    assert (await task.wait_result(timeout=30)).return_value == "x"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Received: x"
    assert re.fullmatch(r"Context: pipeline=\S+, step=0", lines[1])


async def test_10_4_middleware_for_tracing(
    broker: InMemoryBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskiq_fleet import PipelineMiddleware

    pipeline = audio_dataflow(broker)  # stand-in

    class DebugMiddleware(PipelineMiddleware):
        async def on_step_complete(self, ctx, result):  # type: ignore[no-untyped-def]
            print(f"Step {ctx.task_id} completed with: {result}")
            await super().on_step_complete(ctx, result)

    broker.add_middlewares(DebugMiddleware())

    await pipeline.kiq_dataflow(tracks=["a.mp3"])
    lines = capsys.readouterr().out.splitlines()
    assert sorted(re.sub(r"^Step \S+ ", "Step <id> ", line) for line in lines) == [
        "Step <id> completed with: ['a.mp3']",
        "Step <id> completed with: [5]",
        "Step <id> completed with: {'a.mp3': 5}",
    ]
    assert all(line.startswith(f"Step {pipeline.pipeline_id}.") for line in lines)


# -- 11. Performance considerations --------------------------------------------------------


def test_11_1_concurrency_limits() -> None:
    # Limit total parallel tasks globally
    from taskiq_fleet import set_max_parallel_tasks

    set_max_parallel_tasks(20)  # never more than 20 tasks simultaneously

    assert get_max_parallel_tasks() == 20
    assert roomy_parallelism() == 20  # executors clamp to it


async def test_11_1_limit_caps_running_tasks(broker: InMemoryBroker) -> None:
    from taskiq_fleet import MapReduce

    gauge = Gauge()

    @gauge.task(broker)
    def process_item(item: int) -> int:  # stand-in
        return item

    async with fleet_of(broker, BIG_WORKER):
        # Limit total parallel tasks globally
        from taskiq_fleet import set_max_parallel_tasks

        set_max_parallel_tasks(20)  # never more than 20 tasks simultaneously

        mapped = await MapReduce.map(broker, process_item, list(range(50)))

    assert mapped.return_value == list(range(50))
    assert gauge.peak <= 20


async def test_11_2_selective_parallelism(broker: InMemoryBroker) -> None:
    from taskiq_fleet import Pipeline

    gauge = Gauge()

    @gauge.task(broker)
    def process_item(item: int) -> int:  # stand-in
        return item + 1

    items = list(range(24))  # stand-in
    pipeline = Pipeline(broker)  # stand-in

    async with fleet_of(broker, BIG_WORKER):
        # Tip: Profile with varying max_parallel values
        pipeline.map(process_item, items, max_parallel=8)

        task = await pipeline.kiq()
        result = await task.wait_result(timeout=30)

    assert result.return_value == [item + 1 for item in items]
    assert gauge.peak <= 8


async def test_11_3_memory_footprint(broker: InMemoryBroker) -> None:
    from taskiq_fleet import DataflowPipeline, pipeline_task

    @broker.task
    @pipeline_task(output="total")
    def total(chunk: list[int]) -> int:  # stand-in
        return sum(chunk)

    def split_into_chunks(items: list[int], chunk_size: int) -> list[list[int]]:  # stand-in
        return [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]

    pipeline = DataflowPipeline.from_tasks(broker, [total])  # stand-in
    large_list = list(range(250))  # stand-in
    seen = []  # scaffolding

    # Process large datasets in chunks
    chunks = split_into_chunks(large_list, chunk_size=100)
    for chunk in chunks:
        results = await pipeline.kiq_dataflow(chunk)
        # process results before next chunk
        seen.append(results["total"])

    assert seen == [sum(range(100)), sum(range(100, 200)), sum(range(200, 250))]
