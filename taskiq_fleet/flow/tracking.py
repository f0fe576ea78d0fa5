"""Pipeline tracking and middleware (Execution §9 and §10.4).

``PipelineTrackingManager().with_auto_storage(broker)`` keeps one record per pipeline
in memory, each with a time to live: a record expires ``ttl`` seconds after its last
change and reads no longer see it. ``get_status(pipeline_id)`` returns a snapshot::

    tracking = PipelineTrackingManager().with_auto_storage(broker)
    pipeline = Pipeline(broker).with_tracking(tracking)
    task = await pipeline.kiq(data)
    status = await tracking.get_status(pipeline.pipeline_id)
    print(status.status, status.started_at, [(s.name, s.duration_ms) for s in status.steps])

A pipeline reports through the ``Tracker`` protocol (``on_created``, ``on_start``,
``on_step``, ``on_end``); ``PipelineScope`` wraps those calls for a pipeline driver so
that it needs no tracking logic of its own, and does nothing when tracking is off.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, Self, runtime_checkable

from taskiq import AsyncBroker

DEFAULT_TTL = 24 * 3600.0
"""Seconds a record lives after its last change (the documents' storage default: a day)."""

Clock = Callable[[], float]


class TrackingStatus(StrEnum):
    """A pipeline's or a step's state; compares equal to its name (``== "COMPLETED"``)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


def _status(value: str | TrackingStatus) -> TrackingStatus:
    try:
        return TrackingStatus(str(value).upper())
    except ValueError:
        allowed = ", ".join(s.value for s in TrackingStatus)
        raise ValueError(f"a tracking status is one of {allowed}, not {value!r}") from None


def _at(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock(), UTC)


@dataclass
class StepStatus:
    """One step of a pipeline: RUNNING from its start, then how it ended."""

    name: str
    status: TrackingStatus
    duration_ms: int
    worker: str | None = None
    """The worker that ran it; several, comma-separated, for a ``map`` step."""
    completed_at: datetime | None = None
    error: str | None = None


@dataclass
class PipelineStatus:
    """What ``get_status`` returns: the pipeline's state and its steps so far."""

    pipeline_id: str
    status: TrackingStatus = TrackingStatus.PENDING
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    steps: list[StepStatus] = field(default_factory=list)
    error: str | None = None

    @property
    def is_finished(self) -> bool:
        return self.status in (
            TrackingStatus.COMPLETED,
            TrackingStatus.FAILED,
            TrackingStatus.CANCELLED,
        )


@runtime_checkable
class Tracker(Protocol):
    """What a pipeline calls while it runs; ``PipelineTrackingManager`` implements it."""

    async def on_created(self, pipeline_id: str) -> None: ...

    async def on_start(self, pipeline_id: str) -> None: ...

    async def on_step(
        self,
        pipeline_id: str,
        name: str,
        status: str,
        duration_ms: int,
        worker: str | None = None,
        error: str | None = None,
    ) -> None: ...

    async def on_end(self, pipeline_id: str, status: str, error: str | None = None) -> None: ...


class TrackingStorage(Protocol):
    async def get(self, pipeline_id: str) -> PipelineStatus | None: ...
    async def put(self, record: PipelineStatus) -> None: ...
    async def delete(self, pipeline_id: str) -> bool: ...
    async def ids(self) -> list[str]: ...


class MemoryTrackingStorage:
    """A dict of records; each expires ``ttl`` seconds after its last ``put`` (None: never).

    Expiry is checked on read, and expired records are dropped on each write."""

    def __init__(self, ttl: float | None = DEFAULT_TTL, clock: Clock = time.time) -> None:
        if ttl is not None and ttl <= 0:
            raise ValueError(f"a tracking TTL must be > 0 seconds, got {ttl}")
        self.ttl = ttl
        self.clock = clock
        self._records: dict[str, tuple[float | None, PipelineStatus]] = {}

    def _live(self, pipeline_id: str) -> PipelineStatus | None:
        entry = self._records.get(pipeline_id)
        if entry is None:
            return None
        expires, record = entry
        if expires is not None and self.clock() >= expires:
            del self._records[pipeline_id]
            return None
        return record

    async def get(self, pipeline_id: str) -> PipelineStatus | None:
        return self._live(pipeline_id)

    async def put(self, record: PipelineStatus) -> None:
        now = self.clock()
        for key in [k for k, (exp, _) in self._records.items() if exp is not None and now >= exp]:
            del self._records[key]
        expires = None if self.ttl is None else now + self.ttl
        self._records[record.pipeline_id] = (expires, record)

    async def delete(self, pipeline_id: str) -> bool:
        live = self._live(pipeline_id) is not None
        self._records.pop(pipeline_id, None)
        return live

    async def ids(self) -> list[str]:
        return [k for k in list(self._records) if self._live(k) is not None]


class PipelineTrackingManager:
    """Records pipelines' progress (a ``Tracker``) and answers ``get_status``.

    Works without ``with_auto_storage`` too (in memory, default TTL); that call sets the
    TTL and the clock, and remembers the broker. ``clock`` gives epoch seconds and drives
    timestamps, durations and expiry alike, so tests can inject one."""

    def __init__(
        self,
        storage: TrackingStorage | None = None,
        *,
        ttl: float | None = DEFAULT_TTL,
        clock: Clock = time.time,
    ) -> None:
        self.clock = clock
        self.storage: TrackingStorage = storage or MemoryTrackingStorage(ttl, clock)
        self.broker: AsyncBroker | None = None

    def with_auto_storage(
        self,
        broker: AsyncBroker | None = None,
        *,
        ttl: float | None = DEFAULT_TTL,
        clock: Clock | None = None,
    ) -> Self:
        """In-memory storage with a TTL on records (replacing any records kept so far)."""
        self.clock = clock or self.clock
        self.storage = MemoryTrackingStorage(ttl, self.clock)
        self.broker = broker
        return self

    async def _record(self, pipeline_id: str) -> PipelineStatus:
        record = await self.storage.get(pipeline_id)
        if record is None:
            record = PipelineStatus(pipeline_id, created_at=_at(self.clock))
        return record

    async def on_created(self, pipeline_id: str) -> None:
        await self.storage.put(PipelineStatus(pipeline_id, created_at=_at(self.clock)))

    async def on_start(self, pipeline_id: str) -> None:
        record = await self._record(pipeline_id)
        record.status = TrackingStatus.RUNNING
        record.started_at = _at(self.clock)
        await self.storage.put(record)

    async def on_step(
        self,
        pipeline_id: str,
        name: str,
        status: str,
        duration_ms: int,
        worker: str | None = None,
        error: str | None = None,
    ) -> None:
        record = await self._record(pipeline_id)
        state = _status(status)
        ended = None if state is TrackingStatus.RUNNING else _at(self.clock)
        step = StepStatus(name, state, duration_ms, worker, ended, error)
        for index, known in enumerate(record.steps):
            if known.name == name:  # a running step's end replaces it
                record.steps[index] = step
                break
        else:
            record.steps.append(step)
        await self.storage.put(record)

    async def on_end(self, pipeline_id: str, status: str, error: str | None = None) -> None:
        record = await self._record(pipeline_id)
        record.status = _status(status)
        record.completed_at = _at(self.clock)
        record.error = error
        await self.storage.put(record)

    async def get_status(self, pipeline_id: str) -> PipelineStatus | None:
        """A snapshot of the pipeline's record; None if unknown, deleted or expired."""
        record = await self.storage.get(pipeline_id)
        return copy.deepcopy(record)

    async def delete_pipeline(self, pipeline_id: str) -> bool:
        """Forget a pipeline; True if a live record was there."""
        return await self.storage.delete(pipeline_id)

    async def list_pipelines(self) -> list[str]:
        return await self.storage.ids()

    async def cancel_pipeline(self, pipeline_id: str) -> None:
        """Mark a pipeline CANCELLED (the documents' "manually cancelled")."""
        await self.on_end(pipeline_id, TrackingStatus.CANCELLED)


# -- what a pipeline driver calls ------------------------------------------------------


@dataclass
class _StepRun:
    flow: Any = None


_current: ContextVar[_StepRun | None] = ContextVar("fleet_tracked_step", default=None)


def observe_run(flow: Any) -> None:
    """Tell the step being tracked which ``DataflowPipeline`` runs it, so its worker can be
    read from that run once it ends. A no-op outside ``PipelineScope.step``."""
    current = _current.get()
    if current is not None:
        current.flow = flow


def _workers(view: Any) -> str | None:
    names: list[str] = []
    for node in getattr(view, "nodes", ()):
        worker = getattr(node, "worker", None)
        if worker and worker not in names:
            names.append(worker)
    return ",".join(names) or None


async def _worker_of(
    broker: AsyncBroker | None, flow: Any, error: BaseException | None
) -> str | None:
    view = getattr(error, "view", None)
    if view is None and flow is not None and flow.pipeline_id and broker is not None:
        from taskiq_fleet.flow.runner import runner_for

        runner: Any = runner_for(broker)  # LocalFleet and CoordinatorClient: status(run_id)
        try:  # best effort: tracking never fails a step
            view = await runner.status(flow.pipeline_id)
        except Exception:
            view = None
    return _workers(view) if view is not None else None


class PipelineScope:
    """One pipeline's calls to a ``Tracker``; every method is a no-op when it is None."""

    def __init__(
        self,
        tracker: Tracker | None,
        pipeline_id: str,
        broker: AsyncBroker | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.tracker = tracker
        self.pipeline_id = pipeline_id
        self.broker = broker
        self.clock = clock

    async def created(self) -> None:
        if self.tracker is not None:
            await self.tracker.on_created(self.pipeline_id)

    async def start(self) -> None:
        if self.tracker is not None:
            await self.tracker.on_start(self.pipeline_id)

    @asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[None]:
        """Time the body and record the step: COMPLETED, or FAILED / CANCELLED if it
        raised (the exception propagates unchanged)."""
        if self.tracker is None:
            yield
            return
        await self.tracker.on_step(self.pipeline_id, name, TrackingStatus.RUNNING, 0)
        run = _StepRun()
        token = _current.set(run)
        began = self.clock()
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            _current.reset(token)
            await self._step_ended(name, run, began, error)

    async def _step_ended(
        self, name: str, run: _StepRun, began: float, error: BaseException | None
    ) -> None:
        assert self.tracker is not None
        duration_ms = max(0, round((self.clock() - began) * 1000))
        if error is None:
            status = TrackingStatus.COMPLETED
        elif isinstance(error, asyncio.CancelledError):
            status = TrackingStatus.CANCELLED
        else:
            status = TrackingStatus.FAILED
        worker = await _worker_of(self.broker, run.flow, error)
        text = None if error is None else f"{type(error).__name__}: {error}"
        await self.tracker.on_step(self.pipeline_id, name, status, duration_ms, worker, text)

    async def record(
        self, name: str, status: str, duration_ms: int, worker: str | None, error: str | None
    ) -> None:
        """A step timed elsewhere (a step of a pipeline run as one DAG, from its nodes)."""
        if self.tracker is not None:
            await self.tracker.on_step(self.pipeline_id, name, status, duration_ms, worker, error)

    async def end(self, status: str, error: BaseException | None = None) -> None:
        if self.tracker is not None:
            text = None if error is None else f"{type(error).__name__}: {error}"
            await self.tracker.on_end(self.pipeline_id, status, text)
