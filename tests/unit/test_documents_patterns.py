"""The documents' testing and error patterns, and the names they mention (issue 13, items 4-5).

- Tasks guide §8: the ``InMemoryBroker(await_inplace=True)`` fixture, on ``LocalFleetBroker``:
  ``kiq`` runs the task before it returns, and no ``startup()`` is needed.
- Execution guide §5: a pipeline past its timeout raises ``asyncio.TimeoutError`` (the
  builtin ``TimeoutError`` since Python 3.11, so the tests name it so).
- Tasks guide §2.2: ``@pipeline_task(inputs=[...])`` names the input of a parameter with
  another name, through ``DataflowPipeline.from_tasks`` as through the registry.
- A missing pipeline input is one line naming it.
- Execution guide §1.1, §12, §13 and Tasks guide §10: ``SequentialPipeline``,
  ``Pipeline.group``, ``Pipeline.call_after``, ``DataflowPipeline(continue_on_error=True)``
  and ``PipelineErrorAggregator``. (Performance guide §4.3's storage with a TTL,
  ``NatsPipelineStorage``, needs a server: ``tests/integration/test_pipeline_storage.py``.)

Pipelines run on taskiq's ``InMemoryBroker`` (an in-process fleet), as in the other
``test_documents_*`` files; ``per_step`` runs a sequential pipeline step by step
(``on_error("continue")``) instead of as one DAG.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from taskiq import InMemoryBroker

from taskiq_fleet import (
    DataflowPipeline,
    DataflowRegistry,
    ExecutionEngine,
    LocalFleetBroker,
    Pipeline,
    PipelineError,
    PipelineErrorAggregator,
    SequentialPipeline,
    Task,
    pipeline_task,
)
from taskiq_fleet.flow.chain import compile_chain
from tests.unit.documents_support import broker as broker  # a fixture
from tests.unit.documents_support import no_global_cap as no_global_cap  # a fixture

pytestmark = pytest.mark.usefixtures("no_global_cap")

ONE_WORKER = [{"name": "w", "cpu": 4, "ram_mb": 4096}]

# -- Tasks guide §8: the await_inplace fixture ----------------------------------------------


@pytest.fixture
async def test_broker() -> AsyncIterator[LocalFleetBroker]:
    """The document's fixture with ``InMemoryBroker`` replaced; nothing starts it."""
    broker = LocalFleetBroker(ONE_WORKER, await_inplace=True)
    yield broker
    await broker.shutdown()


async def test_8_await_inplace_runs_the_task_inside_kiq(test_broker: LocalFleetBroker) -> None:
    ran: list[int] = []

    @test_broker.task
    async def my_task(x: int) -> int:
        ran.append(x)
        return x + 1

    result = await my_task.kiq(5)
    assert ran == [5]  # before anyone waits for it
    value = await result.wait_result()
    assert value.return_value == 6


async def test_await_inplace_sends_a_batch_at_once(test_broker: LocalFleetBroker) -> None:
    """taskiq PR #634: under ``await_inplace`` a batch does not wait for more items."""

    @test_broker.task(batch=True, batch_size=100, batch_timeout=3600)
    def doubled(items: list[int]) -> list[int]:
        return [2 * i for i in items]

    first = await doubled.kiq(1)
    second = await doubled.kiq(2)
    assert (await first.wait_result(timeout=5)).return_value == 2
    assert (await second.wait_result(timeout=5)).return_value == 4


# -- Execution guide §5: a timeout is an asyncio.TimeoutError --------------------------------


def never_ending(broker: InMemoryBroker, *, timeout: float | None = None) -> Any:
    """A stand-in task that waits for an event nobody sets."""
    never = asyncio.Event()
    labels = {} if timeout is None else {"timeout": timeout}

    @broker.task(**labels)
    async def slow_task(x: int) -> int:
        await never.wait()
        return x

    return slow_task


@pytest.mark.parametrize("per_step", [False, True])
async def test_5_a_pipeline_past_its_timeout_raises_asyncio_timeout_error(
    broker: InMemoryBroker, per_step: bool
) -> None:
    pipeline = Pipeline(broker)
    pipeline.with_timeout(0.05)
    if per_step:
        pipeline.on_error("continue")
    task = await pipeline.call_next(never_ending(broker)).kiq(1)
    with pytest.raises(TimeoutError, match="timed out") as caught:  # is asyncio.TimeoutError
        await task.wait_result(timeout=30, raise_on_error=True)
    assert isinstance(caught.value, PipelineError)


async def test_5_a_dataflow_or_engine_past_its_timeout_raises_asyncio_timeout_error(
    broker: InMemoryBroker,
) -> None:
    slow_task = never_ending(broker)
    pipeline = DataflowPipeline(broker, timeout=0.05).add_dataflow_task(slow_task)
    with pytest.raises(TimeoutError) as caught:
        await pipeline.kiq_dataflow(x=1)
    assert isinstance(caught.value, PipelineError)
    dag = DataflowPipeline.from_tasks(broker, [slow_task]).build()
    with pytest.raises(TimeoutError):
        await ExecutionEngine(broker, dag, timeout=0.05).execute(x=1)


async def test_5_a_step_past_its_tasks_timeout_raises_asyncio_timeout_error(
    broker: InMemoryBroker,
) -> None:
    slow_task = never_ending(broker, timeout=0.05)  # @broker.task(timeout=...)
    with pytest.raises(TimeoutError) as caught:
        await DataflowPipeline.from_tasks(broker, [slow_task]).kiq_dataflow(x=1)
    assert caught.value.failed_step == "slow_task_0"  # type: ignore[attr-defined]


# -- Tasks guide §2.2: inputs= on a parameter with another name ------------------------------


async def test_2_2_inputs_name_the_output_a_differently_named_parameter_takes(
    broker: InMemoryBroker,
) -> None:
    @broker.task
    @pipeline_task(output="features")
    def extract(tracks: list[str]) -> dict[str, int]:
        return {t: len(t) for t in tracks}

    @broker.task
    @pipeline_task(output="tags", inputs=["features"])
    def tag(data: dict[str, int]) -> list[str]:
        return sorted(data)

    pipeline = DataflowPipeline.from_tasks(broker, [extract, tag])
    results = await pipeline.kiq_dataflow(tracks=["b.mp3", "a.mp3"])
    assert results == {"features": {"b.mp3": 5, "a.mp3": 5}, "tags": ["a.mp3", "b.mp3"]}
    registry = DataflowRegistry().register_task(extract).register_task(tag)
    assert pipeline.build() == registry.build_dag()  # one wiring for both paths


# -- a missing input: one line naming it -----------------------------------------------------


async def test_a_missing_pipeline_input_is_one_line_naming_it(broker: InMemoryBroker) -> None:
    @broker.task
    @pipeline_task(output="features")
    def extract(tracks: list[str]) -> int:
        return len(tracks)

    pipeline = DataflowPipeline.from_tasks(broker, [extract])
    with pytest.raises(ValueError, match="tracks") as caught:
        await pipeline.kiq_dataflow()
    assert str(caught.value) == "missing external input(s) ['tracks']"
    with pytest.raises(ValueError, match="tracks") as caught:
        await ExecutionEngine(broker, pipeline.build()).execute()
    assert str(caught.value) == "missing external input(s) ['tracks']"


# -- Execution guide §1.1, §13: SequentialPipeline and group() -------------------------------


def arithmetic(broker: InMemoryBroker) -> tuple[Any, Any, Any, Any]:
    """Stand-ins ``inc``, ``square``, ``double`` and ``total``."""

    @broker.task
    def inc(x: int) -> int:
        return x + 1

    @broker.task
    def square(x: int) -> int:
        return x * x

    @broker.task
    def double(x: int) -> int:
        return 2 * x

    @broker.task
    def total(values: list[int]) -> int:
        return sum(values)

    return inc, square, double, total


@pytest.mark.parametrize("per_step", [False, True])
async def test_1_1_sequential_pipeline(broker: InMemoryBroker, per_step: bool) -> None:
    inc, square, _, _ = arithmetic(broker)
    pipeline = SequentialPipeline(broker).call_next(inc).call_next(square)
    if per_step:
        pipeline.on_error("continue")
    task = await pipeline.kiq(2)
    assert (await task.wait_result(timeout=30)).return_value == 9


@pytest.mark.parametrize("per_step", [False, True])
async def test_13_group_runs_its_tasks_at_the_same_time_on_the_previous_result(
    broker: InMemoryBroker, per_step: bool
) -> None:
    inc, _, _, total = arithmetic(broker)
    meet = asyncio.Barrier(2)  # each waits for the other: they cannot run one after another

    @broker.task
    async def square_together(x: int) -> int:
        await meet.wait()
        return x * x

    @broker.task
    async def double_together(x: int) -> int:
        await meet.wait()
        return 2 * x

    pipeline = Pipeline(broker).call_next(inc).group(square_together, double_together)
    pipeline.call_next(total)
    if per_step:
        pipeline.on_error("continue")
    task = await pipeline.kiq(3)
    result = await task.wait_result(timeout=30)
    assert result.return_value == 16 + 8
    assert task.partial_results["1:square_together+double_together"] == [16, 8]


@pytest.mark.parametrize("per_step", [False, True])
async def test_a_group_first_takes_the_arguments_and_last_gives_the_list(
    broker: InMemoryBroker, per_step: bool
) -> None:
    _, square, double, _ = arithmetic(broker)
    pipeline = Pipeline(broker).group([square, double, square])
    if per_step:
        pipeline.on_error("continue")
    task = await pipeline.kiq(5)
    assert (await task.wait_result(timeout=30)).return_value == [25, 10, 25]
    found = await Task(task.task_id, broker).wait_result(timeout=30)
    assert found.return_value == [25, 10, 25]


def test_a_groups_nodes_all_take_the_previous_step_and_not_each_other(
    broker: InMemoryBroker,
) -> None:
    inc, square, double, total = arithmetic(broker)
    pipeline = Pipeline(broker).call_next(inc).group(square, double).call_next(total)
    flow, _, plans = compile_chain(pipeline.steps, [1], {}, None, None, broker)
    dag = flow.build()
    _, group, last = (tuple(dag.by_id[n] for n in plan.nodes) for plan in plans)
    assert all(n.inputs == {"x": "step0"} for n in group)
    assert dag.by_id[last[0].id].inputs == {"values": ("step1__0", "step1__1")}


def test_group_refuses_nothing_and_non_tasks(broker: InMemoryBroker) -> None:
    with pytest.raises(ValueError, match="at least one task"):
        Pipeline(broker).group()
    with pytest.raises(TypeError, match="not a taskiq task"):
        Pipeline(broker).group(print)


# -- Tasks guide §10: call_after() for side effects ------------------------------------------


@pytest.mark.parametrize("per_step", [False, True])
async def test_10_call_after_sees_the_result_and_passes_it_on(
    broker: InMemoryBroker, per_step: bool
) -> None:
    inc, _, _, _ = arithmetic(broker)
    published: list[int] = []

    @broker.task
    def publish(value: int) -> str:
        published.append(value)
        return f"published {value}"

    @broker.task
    def double_after_publishing(x: int) -> int:
        assert published == [x]  # the side effect ran before the next step
        return 2 * x

    pipeline = Pipeline(broker).call_next(inc).call_after(publish)
    pipeline.call_next(double_after_publishing).call_after(publish)
    if per_step:
        pipeline.on_error("continue")
    task = await pipeline.kiq(1)
    result = await task.wait_result(timeout=30, raise_on_error=True)
    assert result.return_value == 4  # not the side effect's "published 4"
    assert published == [2, 4]
    assert task.partial_results["1:publish"] == "published 2"
    assert (await Task(task.task_id, broker).wait_result(timeout=30)).return_value == 4


def test_call_after_needs_a_step_before_it(broker: InMemoryBroker) -> None:
    inc, _, _, _ = arithmetic(broker)
    with pytest.raises(ValueError, match="call_after\\(\\) follows a step"):
        Pipeline(broker).call_after(inc)


# -- Execution guide §12: continue_on_error=True and PipelineErrorAggregator -------------------


def audio_with_a_failing_tag(broker: InMemoryBroker) -> list[Any]:
    """extract -> (tag, which fails, -> label; embed)."""

    @broker.task
    @pipeline_task(output="features")
    def extract(tracks: list[str]) -> dict[str, int]:
        return {t: len(t) for t in tracks}

    @broker.task
    @pipeline_task(output="tags")
    def tag(features: dict[str, int]) -> list[str]:
        raise ValueError(f"no tags for {len(features)} tracks")

    @broker.task
    @pipeline_task(output="label")
    def label(tags: list[str]) -> str:
        return ",".join(tags)

    @broker.task
    @pipeline_task(output="embedding")
    def embed(features: dict[str, int]) -> list[int]:
        return sorted(features.values())

    return [extract, tag, label, embed]


async def test_12_continue_on_error_returns_partial_results_and_an_aggregator(
    broker: InMemoryBroker,
) -> None:
    pipeline = DataflowPipeline(broker, continue_on_error=True)
    for task in audio_with_a_failing_tag(broker):
        pipeline.add_dataflow_task(task)
    results = await pipeline.kiq_dataflow(tracks=["a.mp3", "long.flac"])
    assert results == {"features": {"a.mp3": 5, "long.flac": 9}, "embedding": [5, 9]}
    errors = pipeline.errors
    assert isinstance(errors, PipelineErrorAggregator)
    assert errors.has_errors
    assert errors.failed_steps == ["tag_1"]
    (failure,) = errors.failures
    assert failure.error_type.endswith("ValueError")
    assert failure.message == "no tags for 2 tracks"
    assert failure.attempts == 1
    assert errors.skipped == ("label_2",)
    assert errors.partial_results == results
    assert errors.summary().splitlines()[-1] == "skipped: label_2"


async def test_without_continue_on_error_the_error_carries_the_aggregator(
    broker: InMemoryBroker,
) -> None:
    pipeline = DataflowPipeline.from_tasks(broker, audio_with_a_failing_tag(broker))
    with pytest.raises(PipelineError) as caught:
        await pipeline.kiq_dataflow(tracks=["a.mp3"])
    assert caught.value.errors.failed_steps == ["tag_1"]
    assert caught.value.errors.partial_results == caught.value.partial_results
    assert pipeline.errors == caught.value.errors


async def test_a_run_without_errors_has_an_empty_aggregator(broker: InMemoryBroker) -> None:
    inc, _, _, _ = arithmetic(broker)
    pipeline = DataflowPipeline(broker, continue_on_error=True).add_dataflow_task(inc)
    assert await pipeline.kiq_dataflow(x=1) == {"inc": 2}
    assert pipeline.errors is not None
    assert not pipeline.errors.has_errors
    assert pipeline.errors.summary() == "no errors"
