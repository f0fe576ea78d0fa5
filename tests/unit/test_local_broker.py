"""``LocalFleetBroker``: kiq, batching and pipelines through the scheduler, no NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from taskiq import BrokerMessage, TaskiqEvents, TaskiqMessage, TaskiqMiddleware

from taskiq_fleet import (
    DataflowPipeline,
    FleetError,
    GPUProfile,
    LocalFleetBroker,
    PipelineContext,
    RAMProfile,
    Task,
    current_gpu_devices,
    pipeline_task,
)

WORKERS = [
    {"name": "small", "cpu": 2, "ram_mb": 2048},
    {"name": "big", "cpu": 8, "ram_mb": 65536},
    {"name": "gpu", "cpu": 4, "ram_mb": 8192, "gpus": [{"index": 0, "model": "L4"}]},
]


def make_broker() -> LocalFleetBroker:
    broker = LocalFleetBroker(WORKERS)

    @broker.task(batch=True, batch_size=60, batch_timeout=3, task_name="tfunc")
    async def tfunc(test: list[int]) -> bool:
        return True

    @broker.task(batch=True, batch_size=5, batch_timeout=0.05, task_name="scale")
    def scale(items: list[int], factor: int, offset: int = 0) -> list[int]:
        return [i * factor + offset for i in items]

    @broker.task(batch=True, batch_size=3, batch_timeout=0.05, task_name="boom")
    def boom(items: list[int]) -> None:
        raise RuntimeError(f"bad batch {items}")

    @broker.task(task_name="flaky", retry_policy={"max_retries": 2, "jitter": 0.5})
    def flaky(key: str, context: PipelineContext) -> int:
        if context.attempt < 3:
            raise ConnectionError(f"attempt {context.attempt}")
        return context.attempt

    @broker.task(task_name="heavy")
    @RAMProfile(ram_mb=32768)
    def heavy(x: int, context: PipelineContext) -> str:
        return f"{x} on {context.worker}"

    @broker.task(task_name="embed")
    @pipeline_task(output="vec")
    @GPUProfile(gpus=1)
    async def embed(text: str, context: PipelineContext) -> list[object]:
        return [len(text), context.worker, list(current_gpu_devices())]

    return broker


async def batch_of(broker: LocalFleetBroker, task_id: str) -> str | None:
    """The batch run a member ran in, from the member's own run."""
    view = await broker.fleet.status(task_id)
    assert view is not None
    return view.nodes[0].batch


@pytest.fixture
async def broker() -> AsyncIterator[LocalFleetBroker]:
    broker = make_broker()
    await broker.startup()
    yield broker
    await broker.shutdown()


async def test_the_hang_script_finishes_with_wait_all(broker: LocalFleetBroker) -> None:
    """The maintainer's script (taskiq PR #634) with only the import changed."""
    tfunc = broker.find_task("tfunc")
    assert tfunc is not None
    tasks = await asyncio.gather(*[tfunc.kiq(i) for i in range(400)])
    await broker.wait_all()
    res = await asyncio.gather(*[task.wait_result(timeout=10) for task in tasks])
    assert [r.return_value for r in res] == [True] * 400
    members = [await batch_of(broker, t.task_id) for t in tasks]
    runs = set(members)
    assert len(runs) == 7
    views = [await broker.fleet.status(r) for r in runs]
    assert all(v is not None and v.status == "succeeded" and len(v.nodes) == 1 for v in views)
    assert sorted(members.count(r) for r in runs) == [40, 60, 60, 60, 60, 60, 60]


async def test_a_batch_flushes_after_its_timeout_without_wait_all(
    broker: LocalFleetBroker,
) -> None:
    scale = broker.find_task("scale")
    assert scale is not None
    tasks = [await scale.kiq(i, 10) for i in range(3)]  # 3 < batch_size: the timer flushes
    got = [(await t.wait_result(timeout=5)).return_value for t in tasks]
    assert got == [0, 10, 20]


async def test_sync_multi_parameter_groups_per_other_arguments(broker: LocalFleetBroker) -> None:
    scale = broker.find_task("scale")
    assert scale is not None
    a = await asyncio.gather(*(scale.kiq(i, 10) for i in range(5)))
    b = await asyncio.gather(*(scale.kiq(i, 2, offset=1) for i in range(3)))
    c = await scale.kiq(items=7, factor=3)
    await broker.wait_all()
    assert [(await t.wait_result()).return_value for t in a] == [0, 10, 20, 30, 40]
    assert [(await t.wait_result()).return_value for t in b] == [1, 3, 5]
    assert (await c.wait_result()).return_value == 21
    run_a = {await batch_of(broker, t.task_id) for t in a}
    run_b = {await batch_of(broker, t.task_id) for t in b}
    assert len(run_a) == len(run_b) == 1
    assert run_a != run_b


async def test_a_failing_batch_fails_every_member(broker: LocalFleetBroker) -> None:
    boom = broker.find_task("boom")
    assert boom is not None
    tasks = await asyncio.gather(*(boom.kiq(i) for i in range(3)))
    results = [await t.wait_result(timeout=5) for t in tasks]
    assert all(isinstance(r.error, RuntimeError) for r in results)  # the task's class
    assert all(str(r.error) == "bad batch [0, 1, 2]" for r in results)


async def test_shutdown_runs_what_is_queued() -> None:
    broker = make_broker()
    await broker.startup()
    tfunc = broker.find_task("tfunc")
    assert tfunc is not None
    tasks = [await tfunc.kiq(i) for i in range(5)]  # 5 < batch_size, 3 s to wait
    fleet = broker.fleet
    await broker.shutdown()
    views = [await fleet.status(t.task_id) for t in tasks]
    assert all(v is not None and v.status == "succeeded" for v in views)
    assert len({v.nodes[0].batch for v in views if v is not None}) == 1


async def test_a_member_is_found_by_its_task_id(broker: LocalFleetBroker) -> None:
    """Execution §3.3 ``Task(task_id)`` of a batch member: its own element, from its id
    alone (it used to stay PENDING: the member's id named no run)."""
    scale = broker.find_task("scale")
    assert scale is not None
    ids = [(await scale.kiq(i, 10)).task_id for i in range(3)]
    found = [await Task(task_id, broker).wait_result(timeout=5) for task_id in ids]
    assert [r.return_value for r in found] == [0, 10, 20]
    assert await Task(ids[0], broker).get_status() == "COMPLETED"


async def test_kiq_is_placed_by_profile(broker: LocalFleetBroker) -> None:
    heavy = broker.find_task("heavy")
    assert heavy is not None
    task = await heavy.kiq(7)
    assert (await task.wait_result(timeout=5)).return_value == "7 on big"


async def test_pipelines_run_on_the_brokers_fleet(broker: LocalFleetBroker) -> None:
    embed = broker.find_task("embed")
    assert embed is not None
    pipeline = DataflowPipeline.from_tasks(broker, [embed])
    results = await pipeline.kiq_dataflow(text="hello")
    assert results["vec"] == [5, "gpu", [0]]


async def test_unknown_runs_are_refused(broker: LocalFleetBroker) -> None:
    fleet = broker.connected()
    with pytest.raises(FleetError, match="no run 'nope'"):
        await fleet.status("nope")
    assert await fleet.status("nope", missing_ok=True) is None
    waiting = await fleet.follow("nope")  # as on the cluster: it may be submitted later
    with pytest.raises(TimeoutError):
        await waiting.wait(timeout=0.01)


async def test_kiq_before_startup_starts_the_broker_once() -> None:
    """As with ``InMemoryBroker``, ``startup()`` is optional (it was a ``SendTaskError``)."""
    broker = make_broker()
    starts: list[object] = []
    broker.add_event_handler(TaskiqEvents.CLIENT_STARTUP, starts.append)
    scale = broker.find_task("scale")
    assert scale is not None
    try:
        tasks = await asyncio.gather(*(scale.kiq(i, 2) for i in range(3)))
        results = [await t.wait_result(timeout=5) for t in tasks]
        assert [r.return_value for r in results] == [0, 2, 4]
        assert len(starts) == 1
    finally:
        await broker.shutdown()


async def test_kiq_follows_the_tasks_retry_policy(broker: LocalFleetBroker) -> None:
    """taskiq sends the dict label as its repr; the policy still reaches the node."""
    flaky = broker.find_task("flaky")
    assert flaky is not None
    task = await flaky.kiq("k")
    assert (await task.wait_result(timeout=5)).return_value == 3


async def test_a_queue_routes_to_the_agents_serving_it() -> None:
    """Tasks guide §2.1 ``queue=``: agents serve a queue through the label ``queue``."""
    broker = LocalFleetBroker(
        [
            {"name": "any", "cpu": 4, "ram_mb": 4096},
            {"name": "urgent", "cpu": 1, "ram_mb": 1024, "labels": {"queue": "high_priority"}},
        ]
    )

    @broker.task(queue="high_priority")
    def urgent(context: PipelineContext) -> str:
        return context.worker

    @broker.task(queue="default")
    def anywhere(context: PipelineContext) -> str:
        return context.worker

    @broker.task(queue="nobody_serves_it")
    def stranded() -> None: ...

    await broker.startup()
    try:
        assert (await (await urgent.kiq()).wait_result(timeout=5)).return_value == "urgent"
        assert (await (await anywhere.kiq()).wait_result(timeout=5)).return_value == "any"
        failed = await (await stranded.kiq()).wait_result(timeout=5)
        assert failed.is_err
        assert "queue=nobody_serves_it" in str(failed.error)
        pipeline = DataflowPipeline(broker).add_dataflow_task(urgent, output="where", inputs=[])
        assert await pipeline.kiq_dataflow() == {"where": "urgent"}
    finally:
        await broker.shutdown()


def test_bad_workers_or_policy_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="used twice"):
        LocalFleetBroker([{"name": "a", "cpu": 1}, {"name": "a", "cpu": 1}])
    with pytest.raises(ValueError, match="policy"):
        LocalFleetBroker(policy="fastest")


async def test_shutdown_waits_at_most_drain_timeout_then_cancels() -> None:
    broker = LocalFleetBroker([{"name": "w", "cpu": 1, "ram_mb": 512}], drain_timeout=0.05)
    never = asyncio.Event()

    @broker.task
    async def stuck() -> None:
        await never.wait()

    await broker.startup()
    task = await stuck.kiq()
    fleet = broker.fleet
    await broker.shutdown()  # returns: the stuck run is cancelled, not awaited forever
    view = await fleet.status(task.task_id)
    assert view is not None
    assert view.status == "cancelled"
    await broker.startup()  # a broker can start again after a shutdown
    assert broker.fleet is not fleet
    await broker.shutdown()


def test_a_task_id_the_broker_drew_is_fresh_and_a_chosen_one_is_not() -> None:
    from taskiq_fleet import FleetBroker

    broker = FleetBroker()
    drawn = broker.id_generator()
    assert broker._drawn(drawn) is True
    assert broker._drawn(drawn) is False, "fresh once: a second kick of the id may have run"
    assert broker._drawn("my-idempotency-key") is False


class Doubling(TaskiqMiddleware):
    """Changes what is sent (``pre_send``) and notes what was (``post_send``)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        message.args = [arg * 2 for arg in message.args]
        return message

    async def post_send(self, message: TaskiqMessage) -> None:
        self.sent.append(message.task_id)


async def test_a_kiq_goes_through_the_broker_s_middlewares_without_being_formatted() -> None:
    """``FleetKicker`` hands the broker the message itself; taskiq's middlewares still
    change it before and see it after, and the formatter is never asked."""
    broker = LocalFleetBroker(WORKERS)
    middleware = Doubling()
    broker.add_middlewares(middleware)

    @broker.task(task_name="same")
    def same(x: int) -> int:
        return x

    formatted: list[str] = []
    dumps = broker.formatter.dumps

    def spy(message: TaskiqMessage) -> BrokerMessage:
        formatted.append(message.task_id)
        return dumps(message)

    broker.formatter.dumps = spy  # type: ignore[method-assign]
    task = await same.kiq(21)
    assert (await task.wait_result(timeout=10)).return_value == 42
    assert middleware.sent == [task.task_id]
    assert formatted == []
    await broker.shutdown()


async def test_a_subclass_s_own_kick_still_sees_every_kiq() -> None:
    seen: list[str] = []

    class Counting(LocalFleetBroker):
        async def kick(self, message: BrokerMessage) -> None:
            seen.append(message.task_name)
            await super().kick(message)

    broker = Counting(WORKERS)

    @broker.task(task_name="inc")
    def inc(x: int) -> int:
        return x + 1

    task = await inc.kiq(1)
    assert (await task.wait_result(timeout=10)).return_value == 2
    assert seen == ["inc"]
    await broker.shutdown()
