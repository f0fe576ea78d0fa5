"""Writes run state behind the scheduler and acknowledges JetStream messages after it.

The pump must never wait for storage: a KV round trip per event would put the
store's latency on every hop of every DAG. So changed runs are only marked
here and written at most once per ``interval``. A run younger than ``min_age``
is not written at all until it ends: most runs of a busy fleet (single tasks
from ``kiq``) end within milliseconds, and then cost one write, their final
record. A JetStream message (a submission, an outcome) is acknowledged only
once every run it changed is stored; if the coordinator dies first, JetStream
delivers it again to the next one, which rebuilds from the last write plus
those messages. A finished run is kept in memory until its final record is
stored, so ``fleet status`` always finds it in one place or the other.

A deep queue costs little here: runs still waiting as submitted when they come of age are
written together, their submissions (as the JSON a dormant run keeps, ``RunState.doze``,
not read back) in one queued record (``RunStore.save_queued``), which goes once each of
them has a record of its own or has ended: a burst of kiqs costs a write and a purge per
few hundred runs, not per run. Such a run's age counts again from its next change, so
an attempt of it that ends within ``min_age`` is not written either. An applied
message keeps only its runs' ids (its bytes are dropped), and one that waits longer than
``progress_every`` for their writes (a slow store) is reported to JetStream as still in
progress, so a live coordinator is not sent it again (and parses it for nothing).
(Leaving queued runs unwritten, their messages unacknowledged, was tried: a coordinator
that fell behind by ``ack_wait`` was sent every one of them again, and again.)

Nothing is written or acknowledged while ``may_act`` says no: a leader whose lease ran
out (paused, partitioned) must not overwrite what the next leader wrote; what it leaves
unwritten and unacknowledged the next leader rebuilds from the streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from nats.aio.msg import Msg

from coordinator.scheduling.machine import Scheduler
from coordinator.scheduling.state import RunState
from coordinator.store import RunStore
from shared.wire.runs import RunView, Submit

log = structlog.get_logger(__name__)

WRITE_CHUNK = 512
"""Records sent at once, and built between two waits for the store."""
_Item = tuple[Submit | bytes, RunView, bool]
"""A run's own record: its submission, its view, and whether it had a live record."""
_Queued = tuple[str, float, bytes]
"""A run for a queued record: its id, ``submitted_at`` and submission JSON."""
QUEUED_BYTES = 256 * 1024
"""The most submission bytes in one queued record (a run larger alone gets its own)."""


@dataclass(slots=True)
class _Held:
    """An applied JetStream message waiting for its runs to be stored or ended."""

    msg: Msg
    runs: list[str]
    """Its runs not yet seen stored (checked from the last: a burst's runs end in order)."""
    told: float
    """When JetStream last heard that it is being worked on (or delivered it)."""


class Checkpointer:
    def __init__(
        self,
        store: RunStore,
        scheduler: Scheduler,
        *,
        interval: float = 0.2,
        min_age: float = 1.0,
        progress_every: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        may_act: Callable[[], bool] = lambda: True,
    ) -> None:
        self._store = store
        self._may_act = may_act
        self._scheduler = scheduler
        self._interval = interval
        self._min_age = min_age
        self._progress_every = progress_every
        self._clock = clock
        self._dirty: set[str] = set()
        self._finished: set[str] = set()
        self._held: list[_Held] = []
        self._born: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._live: set[str] = set()
        """Runs with a ``live.`` record to delete when they finish."""
        self._covered: dict[str, str] = {}
        """Runs whose only record is in a queued record: its id."""
        self._left: dict[str, set[str]] = {}
        """Per queued record, its runs still covered by it."""
        self._spent: list[str] = []
        """Queued records none of whose runs needs them any more, to purge."""
        self._records = (f"{uuid.uuid4().hex[:12]}-{n}" for n in itertools.count())
        self._turns = store.turns

    def mark(
        self, changed: set[str], finished: list[str], acks: list[tuple[Msg, set[str]]]
    ) -> None:
        """``acks``: JetStream messages applied, each with the runs it refers to; it is
        acknowledged once none of those runs has unwritten changes. Its bytes are
        dropped: it may wait minutes for runs deep in the queue."""
        now = self._clock()
        for run_id in changed:
            self._born.setdefault(run_id, now)
        self._dirty |= changed
        self._finished.update(finished)
        for msg, runs in acks:
            msg.data = b""
            self._held.append(_Held(msg, list(runs), now))
        if self._dirty or acks:
            self._wake.set()

    def restored(self, run_ids: list[str], queued: dict[str, list[str]] | None = None) -> None:
        """Runs resumed from live records, and each queued record's runs resumed from it."""
        self._live.update(run_ids)
        for record_id, runs in (queued or {}).items():
            self._cover(record_id, runs)

    async def run(self) -> None:
        keeping = asyncio.create_task(self._keep_alive())
        try:
            await self._write_loop()
        finally:
            keeping.cancel()

    async def _write_loop(self) -> None:
        last = -self._interval
        while True:
            await self._sleep_until_due()
            pause = last + self._interval - self._clock()
            if pause > 0:
                await asyncio.sleep(pause)
            self._wake.clear()
            last = self._clock()
            try:
                if self._may_act():
                    await self.flush()
            except Exception:
                log.exception("checkpoint failed; will retry")
                self._wake.set()

    async def _sleep_until_due(self) -> None:
        """Until something is marked, or the oldest deferred young run comes of age (or,
        while this coordinator may not act, until the next look at whether it may)."""
        oldest = next((t for r, t in self._born.items() if r in self._dirty), None)
        timeout = None
        if oldest is not None and not self._wake.is_set():
            timeout = max(0.0, oldest + self._min_age - self._clock())
        if (self._dirty or self._held) and not self._may_act():
            timeout = self._interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def flush(self, *, everything: bool = False) -> None:
        """Write the changed runs that are due, ``WRITE_CHUNK`` at a time: a deep queue
        marks tens of thousands at once, and building and sending all their records in one
        go held the event loop for seconds (see ``coordinator/turns.py``)."""
        sched, now = self._scheduler, self._clock()
        dirty, self._dirty = list(self._dirty), set()
        self._turns.paced(len(dirty) + len(self._held))
        deferred: set[str] = set()
        failed: dict[str, Exception] = {}
        for start in range(0, len(dirty), WRITE_CHUNK):
            chunk = dirty[start : start + WRITE_CHUNK]
            items, queued, undue = self._due_in(chunk, now, everything)
            deferred.update(undue)
            try:
                items += [self._item(run) for run in await self._save_queued(queued, failed)]
                refused = await self._store.save_many(items)
            except Exception:
                self._dirty.update(dirty[start:], deferred, failed)
                raise
            failed |= refused
            for _, view, _ in items:
                if view.run_id not in refused:
                    self._born.pop(view.run_id, None)
                    (self._live.discard if view.done else self._live.add)(view.run_id)
                    self._uncover(view.run_id)
        self._dirty |= deferred | failed.keys()
        if failed:
            run_id, error = next(iter(failed.items()))
            log.error("runs not stored; will retry", count=len(failed), run=run_id, error=error)
            self._wake.set()
        await self._drop_spent()
        await self._acknowledge()
        for run_id in self._finished - self._dirty:
            self._finished.discard(run_id)
            sched.forget(run_id)

    def _due_in(
        self, chunk: list[str], now: float, everything: bool
    ) -> tuple[list[_Item], list[_Queued], list[str]]:
        """Of these changed runs, the records to write, the runs waiting as submitted (for
        a queued record), and those not due yet."""
        items: list[_Item] = []
        queued: list[_Queued] = []
        undue: list[str] = []
        for run_id in chunk:
            run = self._scheduler.runs.get(run_id)
            if run is None:
                continue
            if not (everything or self._due(run, now)):
                undue.append(run_id)
            elif run_id in self._live or run.status != "running" or not run.as_submitted:
                items.append(self._item(run))
            elif run_id not in self._covered:
                queued.append((run_id, run.submitted_at, run.submit_json()))
        return items, queued, undue

    def _item(self, run: RunState) -> _Item:
        """A run's own record: a queued run's view is built without validation."""
        view = run.queued_view() if run.status == "running" else None
        view = view or self._scheduler.view(run.run_id)
        return run.stored_submit(), view, run.run_id in self._live

    async def _save_queued(
        self, queued: list[_Queued], failed: dict[str, Exception]
    ) -> list[RunState]:
        """Runs waiting as submitted, in records of at most ``QUEUED_BYTES``; returns
        those too large for one, to be written alone. A record the store refuses leaves
        its runs in ``failed``."""
        alone: list[RunState] = []
        records: list[list[_Queued]] = [[]]
        size = 0
        for item in queued:
            if len(item[2]) > QUEUED_BYTES:
                alone.append(self._scheduler.runs[item[0]])
                continue
            if size + len(item[2]) > QUEUED_BYTES and records[-1]:
                records.append([])
                size = 0
            records[-1].append(item)
            size += len(item[2])
        for record in records:
            if not record:
                continue
            record_id = next(self._records)
            try:
                await self._store.save_queued(record_id, [(at, raw) for _, at, raw in record])
            except Exception as exc:
                failed.update((run_id, exc) for run_id, _, _ in record)
                continue
            self._cover(record_id, [run_id for run_id, _, _ in record])
        return alone

    def _cover(self, record_id: str, runs: list[str]) -> None:
        if not runs:
            self._spent.append(record_id)
            return
        self._left[record_id] = set(runs)
        for run_id in runs:
            self._covered[run_id] = record_id
            self._born.pop(run_id, None)  # an attempt's age counts from its start

    def _uncover(self, run_id: str) -> None:
        """``run_id`` has a record of its own now (or its final one)."""
        record_id = self._covered.pop(run_id, None)
        if record_id is None:
            return
        left = self._left[record_id]
        left.discard(run_id)
        if not left:
            del self._left[record_id]
            self._spent.append(record_id)

    async def _drop_spent(self) -> None:
        """A record that could not be purged now is tried again at the next flush."""
        spent, self._spent = self._spent, []
        for index, record_id in enumerate(spent):
            try:
                await self._store.drop_queued(record_id)
            except Exception as exc:
                self._spent += spent[index:]
                log.warning("could not drop a queued record; will retry", error=str(exc)[:200])
                return

    def _due(self, run: RunState, now: float) -> bool:
        """Whether to write a changed run now, or when it is older (``min_age``)."""
        if run.status != "running" or run.run_id in self._live:
            return True
        return now - self._born.get(run.run_id, now) >= self._min_age

    async def _acknowledge(self) -> None:
        """Ack the messages whose runs are all stored (or were never worth storing), and
        none of whose outcomes waits for its run's submission (``Scheduler.holds_early``).
        Messages marked meanwhile (an ack may yield) wait for the next time."""
        held, self._held = self._held, []
        waiting = []
        for item in held:
            runs = item.runs
            while runs and self._stored(runs[-1]):
                runs.pop()
            if runs or not self._may_act():
                waiting.append(item)
            else:
                await item.msg.ack()
                await self._turns.take()
        self._held = waiting + self._held

    async def _keep_alive(self) -> None:
        """Tell JetStream that the messages waiting longer than ``progress_every`` are
        still being worked on, whatever the writes cost meanwhile: one delivered again is
        parsed again, and a deep queue's writes can take longer than ``ack_wait``."""
        while True:
            await asyncio.sleep(self._progress_every / 2)
            now = self._clock()
            for item in list(self._held):
                if now - item.told >= self._progress_every and self._may_act():
                    item.told = now
                    with contextlib.suppress(Exception):  # acked meanwhile, or NATS away
                        await item.msg.in_progress()

    def _stored(self, run_id: str) -> bool:
        """No change of the run waits to be written, and no outcome of it is kept for its
        submission."""
        return run_id not in self._dirty and not self._scheduler.holds_early({run_id})
