"""Long-lived objects out of the cyclic collector's way.

A deep queue keeps millions of objects alive (about seven tracked objects a queued run),
and CPython's full collection walks every one of them each time the heap has grown by a
quarter: with 300,000 runs queued in process, 27 full collections took 10 s in all and
stalled the event loop up to 1.2 s each (the leader lease lapses past 1.2 s); at a
million, several seconds each.

So right after each full collection, what survived it is frozen (``gc.freeze``): it is
alive, and the next full collection walks only what came after. Reference counting still
frees frozen objects; only garbage *cycles* among them would never be collected, so the
scheduler breaks the one a finished run forms with its nodes when it forgets the run
(``Scheduler.forget``). With it, 300,000 runs queued cost 100 full collections of 3 ms
(0.4 s in all).

Young collections come every ``YOUNG_EVERY`` net allocations, not CPython's 700: with
5,000 runs in flight the coordinator collected 1,600 times in 13 s of CPU, and what a run
holds while it is in flight (its state, its submission's parts, the pass's views) survived
enough of them to reach the oldest generation, whose full collections then took 1.3 s of
the 1.9 s spent collecting. At 20,000 the same burst collected 54 times, in 0.4 s (and the
coordinator's CPU per task fell by about 7%, medians of 9 interleaved runs). Objects that
die young are freed by reference counting either way; the young generation only holds
the live ones, so a collection of it costs what is alive, not how long it waited. Not
while the queue is deep: there nearly every allocation survives, and a full collection
comes every hundred young ones; with a young one every 20,000 allocations, each full one
walked what 2 million allocations had left since the last freeze, and a million queued
saw the leader lease lapse five times (none with CPython's thresholds there).

Only while the queue is deep: other cycles (an exception kept with its traceback, say)
may form among frozen objects and would stay until thawed, so below ``DEEP_RUNS`` runs in
memory nothing is frozen, and what was frozen is thawed for the collector to walk again
(a small heap's full collection takes milliseconds).
"""

from __future__ import annotations

import gc
from typing import Any

DEEP_RUNS = 20_000
"""Runs in memory from which the survivors of a full collection are frozen."""
YOUNG_EVERY = 20_000
"""Net allocations of tracked objects between two young collections in the coordinator."""


class Freezer:
    """Notes each full collection (a ``gc`` callback) and freezes after it when told."""

    def __init__(self) -> None:
        self._thresholds: tuple[int, ...] = gc.get_threshold()
        self._due = False
        self.frozen = 0
        """Times frozen (for tests and metrics)."""

    def __enter__(self) -> Freezer:
        self._thresholds = gc.get_threshold()
        gc.set_threshold(YOUNG_EVERY, *self._thresholds[1:])
        gc.callbacks.append(self._noted)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._noted)
        gc.set_threshold(*self._thresholds)
        if self.frozen:
            gc.unfreeze()

    def _noted(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == 2:
            self._due = True

    def settle(self, runs: int) -> None:
        """Freeze what the last full collection left, if there was one since the last call
        and ``runs`` (in memory) make a deep queue; thaw below that. (Not from the
        callback itself: the collector is still running then.)"""
        deep = runs >= DEEP_RUNS
        gc.set_threshold(self._thresholds[0] if deep else YOUNG_EVERY, *self._thresholds[1:])
        if deep:
            if self._due:
                gc.freeze()
                self.frozen += 1
        elif self.frozen:
            gc.unfreeze()
            self.frozen = 0
        self._due = False
