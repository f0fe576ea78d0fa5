"""Pipeline patterns the documents name (Execution guide §5, §12, §13; Tasks guide §8, §10;
Performance guide §4.3), on a fleet.

``python -m examples.pipeline_patterns`` starts two CPU-only agents, then:

- ``SequentialPipeline(broker).call_next(add_one).group(square, add_one)
  .call_after(audit).call_next(add_all)``: the group's two tasks run at the same time on
  the previous result, ``audit`` sees the group's list and passes it on unchanged;
- ``DataflowPipeline(broker, continue_on_error=True)``: ``transcribe`` fails, ``subtitle``
  is skipped, the rest of the results come back, and ``pipeline.errors`` (a
  ``PipelineErrorAggregator``) says what failed;
- ``with_timeout(0.5)`` on a pipeline whose task takes 30 s: ``except asyncio.TimeoutError``;
- tracking records in ``NatsPipelineStorage(url, ttl_seconds=3600)``, the fleet's NATS KV
  (the documents' ``RedisPipelineStorage``), read back through a second connection;
- the documents' test fixture, ``LocalFleetBroker(await_inplace=True)``: ``kiq`` runs the
  task before it returns, no ``startup()`` needed, no server.
"""

from __future__ import annotations

import asyncio

from examples import fleet
from examples.flow_tasks import (
    add_all,
    add_one,
    audit,
    extract,
    render,
    square,
    subtitle,
    tag,
    transcribe,
)
from taskiq_fleet import (
    DataflowPipeline,
    FleetBroker,
    LocalFleetBroker,
    NatsPipelineStorage,
    Pipeline,
    PipelineError,
    PipelineTrackingManager,
    SequentialPipeline,
)

AGENTS = (fleet.CPU, fleet.BIGMEM)


async def group_and_side_effect(broker: FleetBroker) -> None:
    print("SequentialPipeline: call_next(add_one).group(square, add_one)")
    print("                    .call_after(audit).call_next(add_all).kiq(3)")
    pipeline = SequentialPipeline(broker).call_next(add_one).group(square, add_one)
    pipeline.call_after(audit).call_next(add_all)
    task = await pipeline.kiq(3)
    print(f"  -> {(await task.wait_result(timeout=30)).return_value}")
    for step, value in task.partial_results.items():
        print(f"  {step:<18} {value}")


async def continue_on_error(broker: FleetBroker) -> None:
    print("\nDataflowPipeline(broker, continue_on_error=True): extract, tag, transcribe, subtitle")
    pipeline = DataflowPipeline(broker, continue_on_error=True)
    for task in (extract, tag, transcribe, subtitle):
        pipeline.add_dataflow_task(task)
    results = await pipeline.kiq_dataflow(tracks=["intro.mp3", "outro.flac"])
    print(f"  results: {sorted(results)}")
    assert pipeline.errors is not None
    for failure in pipeline.errors.failures:
        print(f"  failed: {failure} (attempts {failure.attempts}, on {failure.worker})")
    print(f"  skipped: {list(pipeline.errors.skipped)}")


async def timeout(broker: FleetBroker) -> None:
    print("\nPipeline(broker).with_timeout(0.5).call_next(render): render takes 30 s")
    task = await Pipeline(broker).with_timeout(0.5).call_next(render).kiq("intro.mp3")
    try:
        await task.wait_result(timeout=30, raise_on_error=True)
    except asyncio.TimeoutError as exc:  # noqa: UP041  # the documents' spelling
        print(f"  asyncio.TimeoutError: {exc}")
        print(f"  also a PipelineError: {isinstance(exc, PipelineError)}")


async def tracked_in_nats(broker: FleetBroker) -> None:
    print("\nPipelineTrackingManager(NatsPipelineStorage(url, ttl_seconds=3600))")
    assert isinstance(broker.nats, str)
    async with NatsPipelineStorage(broker.nats, ttl_seconds=3600) as storage:
        tracking = PipelineTrackingManager(storage)
        pipeline = Pipeline(broker).with_tracking(tracking).call_next(add_one).call_next(square)
        task = await pipeline.kiq(4)
        print(f"  -> {(await task.wait_result(timeout=30)).return_value}")
    async with NatsPipelineStorage(broker.nats, ttl_seconds=3600) as elsewhere:
        status = await PipelineTrackingManager(elsewhere).get_status(task.task_id)
        assert status is not None
        steps = ", ".join(f"{s.name} {s.status}" for s in status.steps)
        print(f"  read through another connection: {status.status}: {steps}")


async def testing_in_place() -> None:
    print("\nLocalFleetBroker(await_inplace=True): no startup(), kiq runs the task")
    test_broker = LocalFleetBroker([{"name": "test", "cpu": 2, "ram_mb": 1024}], await_inplace=True)
    ran: list[int] = []

    @test_broker.task
    async def my_task(x: int) -> int:
        ran.append(x)
        return x + 1

    try:
        result = await my_task.kiq(5)
        print(f"  ran before wait_result: {ran == [5]}")
        print(f"  -> {(await result.wait_result()).return_value}")
    finally:
        await test_broker.shutdown()


async def scenario(broker: FleetBroker) -> None:
    await group_and_side_effect(broker)
    await continue_on_error(broker)
    await timeout(broker)
    await tracked_in_nats(broker)
    await testing_in_place()


if __name__ == "__main__":
    fleet.run(scenario, AGENTS)
