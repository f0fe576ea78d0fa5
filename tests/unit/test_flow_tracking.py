"""Tracking (Execution §9) and PipelineMiddleware (§10.4), in process."""

from __future__ import annotations

from typing import Any

import pytest
from taskiq import InMemoryBroker

from taskiq_fleet import DataflowPipeline, Pipeline, PipelineError, PipelineMiddleware, StepContext
from taskiq_fleet.flow.tracking import (
    MemoryTrackingStorage,
    PipelineScope,
    PipelineTrackingManager,
    Tracker,
    TrackingStatus,
    observe_run,
)

broker = InMemoryBroker()


@broker.task("trk_double")
def double(x: int) -> int:
    return 2 * x


@broker.task("trk_inc")
def inc(x: int) -> int:
    return x + 1


@broker.task("trk_fail")
def fail(x: int) -> int:
    raise ValueError("nope")


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# The tests were written before sequential.py had the wiring; it has it now.
TrackedPipeline = Pipeline


async def test_manager_records_a_pipeline_lifecycle() -> None:
    clock = FakeClock()
    tracking = PipelineTrackingManager().with_auto_storage(broker, clock=clock)
    assert isinstance(tracking, Tracker)
    await tracking.on_created("p1")
    status = await tracking.get_status("p1")
    assert status is not None
    assert status.status == "PENDING"
    assert status.started_at is None

    clock.now += 1
    await tracking.on_start("p1")
    clock.now += 2
    await tracking.on_step("p1", "0:load", "COMPLETED", 2000, "w1")
    await tracking.on_step("p1", "1:save", "failed", 5, None, "ValueError: x")
    running = await tracking.get_status("p1")
    assert running is not None
    assert running.status == TrackingStatus.RUNNING
    assert not running.is_finished

    clock.now += 1
    await tracking.on_end("p1", "FAILED", "ValueError: x")
    done = await tracking.get_status("p1")
    assert done is not None
    assert f"{done.status}" == "FAILED"
    assert done.is_finished
    assert done.started_at is not None
    assert done.completed_at is not None
    assert (done.completed_at - done.started_at).total_seconds() == 3
    assert [(s.name, s.status, s.duration_ms, s.worker) for s in done.steps] == [
        ("0:load", "COMPLETED", 2000, "w1"),
        ("1:save", "FAILED", 5, None),
    ]
    assert done.steps[1].error == "ValueError: x"
    # a snapshot: changing it does not change the record
    done.steps.clear()
    again = await tracking.get_status("p1")
    assert again is not None
    assert len(again.steps) == 2

    assert await tracking.list_pipelines() == ["p1"]
    assert await tracking.delete_pipeline("p1") is True
    assert await tracking.get_status("p1") is None
    assert await tracking.delete_pipeline("p1") is False


async def test_records_expire_after_their_ttl_since_the_last_change() -> None:
    clock = FakeClock()
    tracking = PipelineTrackingManager().with_auto_storage(broker, ttl=60, clock=clock)
    await tracking.on_created("old")
    clock.now += 50
    await tracking.on_start("old")  # a change renews the record
    clock.now += 50
    assert await tracking.get_status("old") is not None
    await tracking.on_created("new")
    clock.now += 59.9
    assert await tracking.get_status("old") is None
    assert await tracking.get_status("new") is not None
    clock.now += 0.1
    assert await tracking.get_status("new") is None
    assert await tracking.list_pipelines() == []


async def test_storage_rules() -> None:
    with pytest.raises(ValueError, match="TTL"):
        MemoryTrackingStorage(ttl=0)
    forever = PipelineTrackingManager().with_auto_storage(ttl=None, clock=FakeClock())
    await forever.on_created("p")
    assert await forever.get_status("p") is not None
    with pytest.raises(ValueError, match="tracking status"):
        await forever.on_end("p", "DONE")
    await forever.cancel_pipeline("p")
    cancelled = await forever.get_status("p")
    assert cancelled is not None
    assert cancelled.status == "CANCELLED"
    assert await forever.get_status("unknown") is None


async def test_a_scope_without_tracker_does_nothing() -> None:
    scope = PipelineScope(None, "p")
    await scope.created()
    await scope.start()
    async with scope.step("0:x"):
        observe_run(object())
    await scope.end("COMPLETED")
    observe_run(object())  # outside any step: ignored


# -- a pipeline wired as proposed ----------------------------------------------------------


async def test_tracked_sequential_pipeline_completes() -> None:
    tracking = PipelineTrackingManager().with_auto_storage(broker)
    pipeline = TrackedPipeline(broker).with_tracking(tracking)
    pipeline.call_next(double).call_next(inc).map(double, items=[1, 2, 3])
    task = await pipeline.kiq(5)
    assert pipeline.pipeline_id is not None
    status = await tracking.get_status(pipeline.pipeline_id)  # right after kiq, as documented
    assert status is not None
    assert status.status in ("PENDING", "RUNNING")
    result = await task.wait_result(timeout=10, raise_on_error=True)
    assert result.return_value == [2, 4, 6]

    status = await tracking.get_status(pipeline.pipeline_id)
    assert status is not None
    assert status.status == "COMPLETED"
    assert status.started_at is not None
    assert status.completed_at is not None
    assert status.completed_at >= status.started_at
    assert [s.name for s in status.steps] == ["0:trk_double", "1:trk_inc", "2:trk_double"]
    assert all(s.status == "COMPLETED" for s in status.steps)
    assert all(s.duration_ms >= 0 for s in status.steps)
    assert all(s.worker for s in status.steps), status.steps


async def test_tracked_sequential_pipeline_fails() -> None:
    tracking = PipelineTrackingManager().with_auto_storage(broker)
    pipeline = TrackedPipeline(broker).with_tracking(tracking)
    pipeline.call_next(double).call_next(fail).call_next(inc)
    task = await pipeline.kiq(1)
    result = await task.wait_result(timeout=10)
    assert result.is_err
    assert pipeline.pipeline_id is not None
    status = await tracking.get_status(pipeline.pipeline_id)
    assert status is not None
    assert status.status == "FAILED"
    assert status.error is not None
    assert [(s.name, s.status) for s in status.steps] == [
        ("0:trk_double", "COMPLETED"),
        ("1:trk_fail", "FAILED"),
    ]
    assert status.steps[1].worker  # read from the failed run's view
    assert status.steps[1].error is not None


async def test_tracked_pipeline_continues_past_a_failed_step() -> None:
    tracking = PipelineTrackingManager().with_auto_storage(broker)
    pipeline = TrackedPipeline(broker).with_tracking(tracking).on_error("continue")
    pipeline.call_next(fail).call_next(double, x=4)
    task = await pipeline.kiq(1)
    assert (await task.wait_result(timeout=10)).return_value == 8
    assert pipeline.pipeline_id is not None
    status = await tracking.get_status(pipeline.pipeline_id)
    assert status is not None
    assert status.status == "COMPLETED"
    assert [s.status for s in status.steps] == ["FAILED", "COMPLETED"]


async def test_an_untracked_pipeline_still_runs() -> None:
    pipeline = TrackedPipeline(broker).call_next(double)
    task = await pipeline.kiq(4)
    assert (await task.wait_result(timeout=10)).return_value == 8


# -- middleware --------------------------------------------------------------------------


class Recorder(PipelineMiddleware):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, StepContext, Any]] = []

    async def on_step_start(self, ctx: StepContext) -> None:
        self.events.append(("start", ctx, None))

    async def on_step_complete(self, ctx: StepContext, result: Any) -> None:
        self.events.append(("complete", ctx, result))
        await super().on_step_complete(ctx, result)

    async def on_step_error(self, ctx: StepContext, error: BaseException) -> None:
        self.events.append(("error", ctx, error))


async def test_middleware_hooks_run_for_pipeline_nodes() -> None:
    mw_broker = InMemoryBroker()
    recorder = Recorder()
    mw_broker.add_middlewares(recorder)

    @mw_broker.task("mw_double")
    def mw_double(x: int) -> int:
        return 2 * x

    @mw_broker.task("mw_fail")
    def mw_fail(x: int) -> int:
        raise ValueError("bad")

    flow = DataflowPipeline(mw_broker).add_dataflow_task(mw_double, output="y")
    assert await flow.kiq_dataflow(x=3) == {"y": 6}
    kinds = [(kind, result) for kind, _, result in recorder.events]
    assert kinds == [("start", None), ("complete", 6)]
    ctx = recorder.events[1][1]
    assert ctx.pipeline_id == flow.pipeline_id
    assert ctx.task_name == "mw_double"
    assert ctx.task_id.startswith(f"{flow.pipeline_id}.")
    assert ctx.attempt == 1
    assert ctx.step_index == 0
    assert ctx.worker

    recorder.events.clear()
    failing = DataflowPipeline(mw_broker).add_dataflow_task(mw_fail, output="z")
    with pytest.raises(PipelineError):
        await failing.kiq_dataflow(x=1)
    assert [kind for kind, _, _ in recorder.events] == ["start", "error"]
    assert isinstance(recorder.events[1][2], ValueError)

    recorder.events.clear()
    await mw_double.kiq(1)  # a plain task, not a pipeline node: no hooks
    assert recorder.events == []
