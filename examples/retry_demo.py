"""Retries (Tasks guide §6, Execution guide §4): a policy, a conditional retry, none.

``python -m examples.retry_demo`` starts one agent, then:

- ``Pipeline(broker).with_retry(max_attempts=3, delay=0.2, backoff=2)``: ``call_api``
  raises ``ConnectionError`` twice and succeeds on attempt 3, after 0.2 s and 0.4 s;
- ``flaky_fetch`` raises ``RetryException`` twice: a conditional retry, asked by the task
  itself, so it is retried without any policy;
- ``validate`` raises ``ValueError``: no policy, not a ``RetryException``, so it fails at
  once, and ``wait_result()`` reports the failed step;
- ``@broker.task(retry_policy={"max_retries": 3, ...})`` on ``read_sensor``: a
  decorator-level retry with backoff and jitter, for a plain ``kiq``.
"""

from __future__ import annotations

from examples import fleet
from examples.flow_tasks import call_api, flaky_fetch, read_sensor, validate
from taskiq_fleet import FleetBroker, Pipeline, PipelineTrackingManager

AGENTS = (fleet.CPU,)


async def scenario(broker: FleetBroker) -> None:
    print("retry: Pipeline(broker).with_retry(max_attempts=3, delay=0.2, backoff=2)")
    tracking = PipelineTrackingManager().with_auto_storage(broker)
    pipeline = Pipeline(broker).with_retry(max_attempts=3, delay=0.2, backoff=2)
    task = await pipeline.with_tracking(tracking).call_next(call_api).kiq("https://api.example.org")
    print(f"  -> {(await task.wait_result(timeout=30)).return_value}")
    assert pipeline.pipeline_id is not None
    status = await tracking.get_status(pipeline.pipeline_id)
    assert status is not None
    for step in status.steps:
        print(f"  {step.name} ran on {step.worker}: {step.status}")

    print("\nretry: flaky_fetch raises RetryException twice (no policy)")
    task = await Pipeline(broker).call_next(flaky_fetch).kiq("https://example.org")
    print(f"  -> {(await task.wait_result(timeout=30)).return_value}")

    print("\nno retry: validate raises ValueError (no policy)")
    task = await Pipeline(broker).call_next(validate).kiq({"age": -1})
    result = await task.wait_result(timeout=30)
    print(f"  is_err={result.is_err}, failed step {task.failed_step}")
    print(f"  {result.error}")
    try:  # the task's own exception class, rebuilt here from its name (no pickle)
        result.raise_for_error()
    except ValueError as exc:
        print(f"  except ValueError caught {type(exc).__name__}: {exc.__cause__}")

    print("\nretry: @broker.task(retry_policy={...}) read_sensor, TimeoutError once; plain kiq")
    sensor = await read_sensor.kiq("greenhouse")
    print(f"  -> {(await sensor.wait_result(timeout=30)).return_value}")
    print(fleet.placement(await fleet.run_view(broker, sensor.task_id)))


if __name__ == "__main__":
    fleet.run(scenario, AGENTS)
