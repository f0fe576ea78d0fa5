"""``@broker.task(timeout=, retry_policy=, max_retries=)`` hold inside pipelines too;
``Pipeline.with_retry`` overrides them for every step (Tasks guide §2.1, §6)."""

from __future__ import annotations

import pytest
from taskiq import InMemoryBroker

from shared.dag import RetryPolicy, timeout_from_labels
from taskiq_fleet import DataflowPipeline, Pipeline, PipelineError
from taskiq_fleet.flow.chain import compile_chain

broker = InMemoryBroker()
attempts: dict[str, int] = {}


@broker.task(
    "flaky",
    retry_policy={"max_retries": 3, "delay": 0.01, "backoff": 2.0, "jitter": 0.5},
)
def flaky(key: str) -> str:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] < 3:
        raise ConnectionError("try again")
    return f"ok after {attempts[key]}"


@broker.task("counted", max_retries=1)
def counted(key: str) -> str:
    attempts[key] = attempts.get(key, 0) + 1
    raise ConnectionError("always")


@broker.task("stuck", timeout=0.05)
async def stuck(x: int) -> int:
    import asyncio

    await asyncio.sleep(5)
    return x


@broker.task("plain")
def plain(x: int) -> int:
    return x


def test_policies_come_from_labels_in_both_spellings() -> None:
    assert RetryPolicy.from_labels({}) is None
    assert RetryPolicy.from_labels({"max_retries": "2"}) == RetryPolicy(max_retries=2)
    text = '{"max_retries": 3, "delay": 5.0, "backoff": 2.0, "jitter": 0.25}'
    assert RetryPolicy.from_labels({"retry_policy": text}) == RetryPolicy(
        max_retries=3, delay=5.0, backoff=2.0, jitter=0.25
    )
    as_taskiq_sends_it = str({"max_retries": 2, "delay": 0.5})  # a repr, not JSON
    assert RetryPolicy.from_labels({"retry_policy": as_taskiq_sends_it}) == RetryPolicy(
        max_retries=2, delay=0.5
    )
    assert timeout_from_labels({"timeout": "30"}) == 30.0
    assert timeout_from_labels({"timeout": 0}) is None
    assert timeout_from_labels({}) is None
    with pytest.raises(ValueError, match="timeout must be a number of seconds, got 'soon'"):
        timeout_from_labels({"timeout": "soon"})


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"max_retries": "many"}, "max_retries must be a whole number"),
        ({"retry_policy": {"jitter": 2}}, "jitter"),
        ({"retry_policy": {"max_retries": 1, "dleay": 2}}, "dleay"),
        ({"retry_policy": "three times"}, "label 'retry_policy' is not a dict"),
    ],
)
def test_a_bad_policy_is_a_clear_error(labels: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy.from_labels(labels)


def test_nodes_carry_their_tasks_policy_unless_the_pipeline_sets_one() -> None:
    dag = DataflowPipeline.from_tasks(broker, [flaky, plain]).build()
    by_task = {n.task: n for n in dag.nodes}
    assert by_task["flaky"].retry == RetryPolicy(max_retries=3, delay=0.01, backoff=2, jitter=0.5)
    assert by_task["plain"].retry == RetryPolicy()
    pipeline = Pipeline(broker).with_retry(max_attempts=2, delay=1, jitter=0.1).call_next(flaky)
    flow, _, _ = compile_chain(pipeline.steps, ["k"], {}, pipeline.retry, None, broker)
    (node,) = flow.build().nodes
    assert node.retry == RetryPolicy(max_retries=1, delay=1, jitter=0.1)


def test_nodes_carry_their_tasks_timeout() -> None:
    (node,) = DataflowPipeline.from_tasks(broker, [stuck]).build().nodes
    assert node.timeout == 0.05


async def test_a_tasks_retry_policy_retries_it_in_a_dataflow() -> None:
    results = await DataflowPipeline.from_tasks(broker, [flaky]).kiq_dataflow(key="a")
    assert results == {"flaky": "ok after 3"}


async def test_max_retries_label_bounds_the_attempts() -> None:
    with pytest.raises(PipelineError) as failed:
        await DataflowPipeline.from_tasks(broker, [counted]).kiq_dataflow(key="b")
    assert attempts["b"] == 2
    assert failed.value.view.nodes[0].attempt == 2


async def test_a_tasks_timeout_ends_its_step() -> None:
    task = await Pipeline(broker).call_next(stuck).kiq(1)
    result = await task.wait_result(timeout=5)
    assert result.is_err
    assert task.failed_step == "0:stuck"


@broker.task("join")
def join(first: str, second: str) -> str:
    return first + second


async def test_kiq_dataflow_takes_external_inputs_by_position() -> None:
    pipeline = DataflowPipeline.from_tasks(broker, [join])
    assert await pipeline.kiq_dataflow("a", "b") == {"join": "ab"}
    assert await pipeline.kiq_dataflow("a", first="z") == {"join": "za"}
    with pytest.raises(TypeError, match=r"3 positional values for the external inputs"):
        await pipeline.kiq_dataflow("a", "b", "c")


def test_priority_from_labels() -> None:
    from shared.dag import priority_from_labels

    assert priority_from_labels({}) == 0
    assert priority_from_labels({"priority": "7"}) == 7
    assert priority_from_labels({"priority": "High"}) == 10
    assert priority_from_labels({"priority": "low"}) == -10
    with pytest.raises(ValueError, match="priority must be a whole number or high/normal/low"):
        priority_from_labels({"priority": "urgent"})


async def test_higher_priority_runs_first_when_nodes_wait_for_room() -> None:
    import asyncio

    from taskiq_fleet import LocalFleetBroker

    fleet = LocalFleetBroker([{"name": "one", "cpu": 1, "ram_mb": 1024}])
    holding, release = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    @fleet.task
    async def hold() -> None:
        holding.set()
        await release.wait()

    @fleet.task(labels={"priority": "low"})
    def later() -> None:
        order.append("low")

    @fleet.task(priority=5)
    def sooner() -> None:
        order.append("high")

    (node,) = DataflowPipeline(fleet).add_dataflow_task(sooner, inputs=[]).build().nodes
    assert node.priority == 5
    await fleet.startup()
    try:
        await hold.kiq()
        await asyncio.wait_for(holding.wait(), 5)  # the only core is taken
        tasks = [await later.kiq(), await sooner.kiq()]
        release.set()
        for task in tasks:
            await task.wait_result(timeout=5)
    finally:
        await fleet.shutdown()
    assert order == ["high", "low"]
