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

Nothing is written or acknowledged while ``may_act`` says no: a leader whose lease ran
out (paused, partitioned) must not overwrite what the next leader wrote; what it leaves
unwritten and unacknowledged the next leader rebuilds from the streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog
from nats.aio.msg import Msg

from coordinator.scheduling.machine import Scheduler
from coordinator.store import RunStore

log = structlog.get_logger(__name__)


class Checkpointer:
    def __init__(
        self,
        store: RunStore,
        scheduler: Scheduler,
        *,
        interval: float = 0.2,
        min_age: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        may_act: Callable[[], bool] = lambda: True,
    ) -> None:
        self._store = store
        self._may_act = may_act
        self._scheduler = scheduler
        self._interval = interval
        self._min_age = min_age
        self._clock = clock
        self._dirty: set[str] = set()
        self._finished: set[str] = set()
        self._acks: list[tuple[Msg, set[str]]] = []
        self._born: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._live: set[str] = set()
        """Runs with a ``live.`` record to delete when they finish."""

    def mark(
        self, changed: set[str], finished: list[str], acks: list[tuple[Msg, set[str]]]
    ) -> None:
        """``acks``: JetStream messages applied, each with the runs it refers to; it is
        acknowledged once none of those runs has unwritten changes."""
        now = self._clock()
        for run_id in changed:
            self._born.setdefault(run_id, now)
        self._dirty |= changed
        self._finished.update(finished)
        self._acks += acks
        if self._dirty or self._acks:
            self._wake.set()

    def restored(self, run_ids: list[str]) -> None:
        self._live.update(run_ids)

    async def run(self) -> None:
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
        deferred = [self._born[r] for r in self._dirty if r in self._born]
        timeout = None
        if deferred and not self._wake.is_set():
            timeout = max(0.0, min(deferred) + self._min_age - self._clock())
        if (self._dirty or self._acks) and not self._may_act():
            timeout = self._interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def flush(self, *, everything: bool = False) -> None:
        sched, now = self._scheduler, self._clock()
        dirty, self._dirty = self._dirty, set()
        items, deferred = [], set()
        for run_id in dirty:
            run = sched.runs.get(run_id)
            if run is None:
                continue
            young = now - self._born.get(run_id, now) < self._min_age
            if run.status == "running" and run_id not in self._live and young and not everything:
                deferred.add(run_id)
                continue
            items.append((run.submit, sched.view(run_id), run_id in self._live))
        try:
            failed = await self._store.save_many(items)
        except Exception:
            self._dirty |= dirty
            raise
        self._dirty |= deferred | failed.keys()
        if failed:
            run_id, error = next(iter(failed.items()))
            log.error("runs not stored; will retry", count=len(failed), run=run_id, error=error)
            self._wake.set()
        for _, view, _ in items:
            if view.run_id in failed:
                continue
            if view.done:
                self._live.discard(view.run_id)
                self._born.pop(view.run_id, None)
            else:
                self._live.add(view.run_id)
        await self._acknowledge(self._dirty)
        for run_id in self._finished - self._dirty:
            self._finished.discard(run_id)
            sched.forget(run_id)

    async def _acknowledge(self, unwritten: set[str]) -> None:
        """Ack the messages whose runs are all stored (or were never worth storing), and
        none of whose outcomes waits for its run's submission (``Scheduler.holds_early``)."""
        waiting = []
        for msg, runs in self._acks:
            if runs & unwritten or self._scheduler.holds_early(runs) or not self._may_act():
                waiting.append((msg, runs))
            else:
                await msg.ack()
        self._acks = waiting
