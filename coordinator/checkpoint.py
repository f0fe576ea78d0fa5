"""Writes run state behind the scheduler and acknowledges JetStream messages after it.

The pump must never wait for storage: a KV round trip per event would put the
store's latency on every hop of every DAG. So changed runs are only marked
here, and written at most once per ``interval`` (a run that changes on every
hop is written a few times a second, not on every hop). A JetStream message
(a submission, an outcome) is acknowledged only once a write that includes
its effect is stored; if the coordinator dies first, JetStream delivers it
again to the next one, which rebuilds from the last write plus those messages.
A finished run is kept in memory until its final record is stored, so
``fleet status`` always finds it in one place or the other.
"""

from __future__ import annotations

import asyncio
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._scheduler = scheduler
        self._interval = interval
        self._clock = clock
        self._dirty: set[str] = set()
        self._finished: set[str] = set()
        self._acks: list[Msg] = []
        self._wake = asyncio.Event()
        self._live: set[str] = set()
        """Runs with a ``live.`` record to delete when they finish."""

    def mark(self, changed: set[str], finished: list[str], acks: list[Msg]) -> None:
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
            await self._wake.wait()
            pause = last + self._interval - self._clock()
            if pause > 0:
                await asyncio.sleep(pause)
            self._wake.clear()
            last = self._clock()
            try:
                await self.flush()
            except Exception:
                log.exception("checkpoint failed; will retry")
                self._wake.set()

    async def flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        acks, self._acks = self._acks, []
        finished, self._finished = self._finished & dirty, self._finished - dirty
        sched = self._scheduler
        items = []
        for run_id in dirty:
            if run_id in sched.runs:
                run = sched.runs[run_id]
                items.append((run.submit, sched.view(run_id), run_id in self._live))
        try:
            await self._store.save_many(items)
        except Exception:
            self._dirty |= dirty
            self._acks = acks + self._acks
            self._finished |= finished
            raise
        for _, view, _ in items:
            if view.done:
                self._live.discard(view.run_id)
            else:
                self._live.add(view.run_id)
        for msg in acks:
            await msg.ack()
        for run_id in finished:
            sched.forget(run_id)
