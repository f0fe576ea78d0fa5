"""Outcomes that arrive before their run: kept, bounded, until its submission comes.

A coordinator killed within a second of a submission has neither stored the run nor
acknowledged the submission. Its agents go on: the node's outcome is stored in
JetStream while no coordinator runs, and the restarted coordinator receives it at once,
before JetStream delivers the unacknowledged submission again (``ack_wait`` later).
Dropped as unknown, the node would run a second time. So an outcome for a run the
scheduler does not know is kept here (its message unacknowledged) and applied when the
submission arrives. Memory is bounded: at most ``limit`` outcomes, none older than
``max_age``; one given up on is forgotten, and so is its run for a while, so a copy
JetStream delivers again is not kept once more and its message is acknowledged.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from shared.wire.protocol import AttemptRef, Outcome

LIMIT = 10_000
MAX_AGE = 60.0
GIVEN_UP_MEMORY = 10_000


class EarlyOutcomes:
    def __init__(self, limit: int = LIMIT, max_age: float = MAX_AGE) -> None:
        self.limit = limit
        self.max_age = max_age
        self._kept: dict[str, dict[AttemptRef, Outcome]] = {}
        """By run, then attempt: the first copy of each outcome (JetStream's order)."""
        self._order: deque[tuple[float, AttemptRef]] = deque()
        """Arrival order, for the age and count limits (entries of taken runs go stale)."""
        self._count = 0
        self._given_up: OrderedDict[str, None] = OrderedDict()  # popped from the front: O(1)

    def __len__(self) -> int:
        return self._count

    def keep(self, outcome: Outcome, now: float) -> bool:
        """Keep ``outcome`` until its run is known; False if its run was given up on."""
        ref = outcome.ref
        if ref.run_id in self._given_up:
            return False
        kept = self._kept.setdefault(ref.run_id, {})
        if ref not in kept:
            kept[ref] = outcome
            self._count += 1
            self._order.append((now, ref))
        self.expire(now)
        return ref.run_id in self._kept

    def take(self, run_id: str) -> list[Outcome]:
        """The outcomes kept for ``run_id``, now that it is known (forgotten here)."""
        kept = self._kept.pop(run_id, {})
        self._count -= len(kept)
        return list(kept.values())

    def holds(self, run_ids: set[str]) -> bool:
        """Whether an outcome of any of these runs waits here (its message is not
        acknowledged until it is applied or given up on)."""
        return any(run_id in self._kept for run_id in run_ids)

    def expire(self, now: float) -> None:
        """Give up on the oldest outcomes past the age limit or over the count limit."""
        while self._order and (self._count > self.limit or now - self._order[0][0] > self.max_age):
            _, ref = self._order.popleft()
            kept = self._kept.get(ref.run_id)
            if kept is None or kept.pop(ref, None) is None:
                continue  # taken with its run already
            self._count -= 1
            if not kept:
                del self._kept[ref.run_id]
            self._give_up(ref.run_id)

    def _give_up(self, run_id: str) -> None:
        self._given_up[run_id] = None
        if len(self._given_up) > GIVEN_UP_MEMORY:
            self._given_up.popitem(last=False)
