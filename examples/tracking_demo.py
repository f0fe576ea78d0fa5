"""Tracking (Execution guide §3.2, §6, §9; Performance guide §4.3, §10).

``python -m examples.tracking_demo`` starts two CPU-only agents, then runs
``Pipeline(broker).with_tracking(tracking).call_next(list_album).map(loudness)
.call_next(summarize)`` and follows it with ``tracking.get_status(pipeline.pipeline_id)``
while it runs: status, timestamps, and per step its status, duration and the worker that
ran it (several for the ``map``). ``summarize`` declares a ``PipelineContext``. A second
pipeline fails in ``publish``: FAILED, with the error. Last, ``list_pipelines`` and
``delete_pipeline``.
"""

from __future__ import annotations

import asyncio

from examples import fleet
from examples.flow_tasks import list_album, loudness, publish, summarize
from taskiq_fleet import FleetBroker, Pipeline, PipelineTrackingManager

AGENTS = (fleet.CPU, fleet.BIGMEM)


async def scenario(broker: FleetBroker) -> None:
    tracking = PipelineTrackingManager().with_auto_storage(broker)
    pipeline = Pipeline(broker).with_tracking(tracking).with_context(enable=True)
    pipeline.call_next(list_album).map(loudness).call_next(summarize)
    print("tracking: call_next(list_album).map(loudness).call_next(summarize).kiq('demo')")
    task = await pipeline.kiq("demo")
    assert pipeline.pipeline_id is not None
    seen: list[tuple[str, str]] = []
    while not task.is_finished:  # polling, as a progress bar would
        status = await tracking.get_status(pipeline.pipeline_id)
        steps = [(s.name, str(s.status)) for s in status.steps] if status is not None else []
        if status is not None and steps != seen:
            seen = steps
            now = ", ".join(f"{name} {state}" for name, state in steps)
            print(f"  ... {status.status}: {now}")
        await asyncio.sleep(0.02)
    print(f"  -> {(await task.wait_result(timeout=30)).return_value}")

    status = await tracking.get_status(pipeline.pipeline_id)
    assert status is not None
    print(f"  status: {status.status}, {len(status.steps)} steps")
    print(f"  started {status.started_at}, completed {status.completed_at}")
    for step in status.steps:
        print(f"    {step.name:<12} {step.status} on {step.worker} ({step.duration_ms} ms)")
    slowest = max(status.steps, key=lambda s: s.duration_ms)
    print(f"  slowest step: {slowest.name} at {slowest.duration_ms} ms")

    print("\ntracking a failure: call_next(list_album).call_next(publish).kiq('demo')")
    failing = Pipeline(broker).with_tracking(tracking).call_next(list_album).call_next(publish)
    result = await (await failing.kiq("demo")).wait_result(timeout=30)
    assert failing.pipeline_id is not None
    failed = await tracking.get_status(failing.pipeline_id)
    assert failed is not None
    print(f"  is_err={result.is_err}; status: {failed.status}")
    for step in failed.steps:
        print(f"    {step.name:<12} {step.status} on {step.worker}: {step.error or 'ok'}")

    print(f"\nlist_pipelines: {len(await tracking.list_pipelines())} records")
    await tracking.delete_pipeline(failing.pipeline_id)
    gone = await tracking.get_status(failing.pipeline_id) is None
    print(f"delete_pipeline: record gone={gone}, {len(await tracking.list_pipelines())} left")


if __name__ == "__main__":
    fleet.run(scenario, AGENTS)
