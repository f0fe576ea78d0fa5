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

A deep queue costs little here: a queued run's live record is its submission as the
JSON a dormant run keeps (``RunState.doze``), not read back to be written; an applied
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
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from nats.aio.msg import Msg

from coordinator.scheduling.machine import Scheduler
from coordinator.scheduling.state import RunState
from coordinator.store import RunStore

log = structlog.get_logger(__name__)

WRITE_CHUNK = 512
"""Records sent at once, and built between two waits for the store."""


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

    def restored(self, run_ids: list[str]) -> None:
        self._live.update(run_ids)

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
        deferred: set[str] = set()
        failed: dict[str, Exception] = {}
        for start in range(0, len(dirty), WRITE_CHUNK):
            items = []
            for run_id in dirty[start : start + WRITE_CHUNK]:
                run = sched.runs.get(run_id)
                if run is None:
                    continue
                if everything or self._due(run, now):
                    view = run.queued_view() if run.status == "running" else None
                    view = view or sched.view(run_id)
                    items.append((run.stored_submit(), view, run_id in self._live))
                else:
                    deferred.add(run_id)
            try:
                refused = await self._store.save_many(items)
            except Exception:
                self._dirty.update(dirty[start:], deferred, failed)
                raise
            failed |= refused
            for _, view, _ in items:
                if view.run_id not in refused:
                    self._born.pop(view.run_id, None)
                    (self._live.discard if view.done else self._live.add)(view.run_id)
        self._dirty |= deferred | failed.keys()
        if failed:
            run_id, error = next(iter(failed.items()))
            log.error("runs not stored; will retry", count=len(failed), run=run_id, error=error)
            self._wake.set()
        await self._acknowledge()
        for run_id in self._finished - self._dirty:
            self._finished.discard(run_id)
            sched.forget(run_id)

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
