"""Quickstart: one task, then a sequential pipeline, on a live local fleet.

``python -m examples.quickstart`` starts nats-server, a coordinator and one agent (each a
process), then:

- ``await add_one.kiq(1)`` and ``wait_result()``: a taskiq task, placed by the coordinator;
- ``Pipeline(broker).call_next(add_one).call_next(repeat, times=4).kiq(2)``: each step
  gets the previous result; the result is ``[3, 3, 3, 3]``, as in the Execution guide §8.1.
  Tracking records each step's status, worker and duration.
"""

from __future__ import annotations

from examples import fleet
from examples.flow_tasks import add_one, repeat
from taskiq_fleet import FleetBroker, Pipeline, PipelineTrackingManager

AGENTS = (fleet.CPU,)


async def scenario(broker: FleetBroker) -> None:
    print("quickstart: add_one.kiq(1)")
    task = await add_one.kiq(1)
    result = await task.wait_result(timeout=30)
    print(f"  -> {result.return_value}")
    print(fleet.placement(await fleet.run_view(broker, task.task_id)))

    print("\nquickstart: Pipeline(broker).call_next(add_one).call_next(repeat, times=4).kiq(2)")
    tracking = PipelineTrackingManager().with_auto_storage(broker)
    pipeline = Pipeline(broker).with_tracking(tracking)
    pipeline.call_next(add_one).call_next(repeat, times=4)
    pipe_task = await pipeline.kiq(2)
    print(f"  -> {(await pipe_task.wait_result(timeout=30)).return_value}")
    assert pipeline.pipeline_id is not None
    status = await tracking.get_status(pipeline.pipeline_id)
    assert status is not None
    for step in status.steps:
        value = pipe_task.partial_results[step.name]
        print(f"  {step.name:<18} ran on {step.worker}: {step.status} -> {value}")


if __name__ == "__main__":
    fleet.run(scenario, AGENTS)
