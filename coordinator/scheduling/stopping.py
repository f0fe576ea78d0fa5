"""Cancelled attempts an agent has not stopped yet: they keep their reservation.

A cancel reaches the agent after the decision, and the attempt ends some time after
that. Released at the decision, its capacity would be offered to the next node at once,
whose assignment could reach the full agent first and be rejected for capacity (and
count toward ``max_rejects``). So a cancelled attempt is booked here with its worker, and
its reservation is released only when the agent reports it ended: its outcome, a
heartbeat that no longer lists it, or the worker gone. Plain records and reads; the
scheduler releases the reservations.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.scheduling.state import NodeState
from shared.wire.protocol import AttemptRef


@dataclass(frozen=True, slots=True)
class Stopping:
    worker: str
    placed_at: float
    received: bool
    """The agent accepted or listed it: a heartbeat without it means it ended."""


class StoppingAttempts:
    def __init__(self) -> None:
        self._book: dict[AttemptRef, Stopping] = {}

    def __contains__(self, ref: object) -> bool:
        return ref in self._book

    def __len__(self) -> int:
        return len(self._book)

    def book(self, state: NodeState, reserved: bool) -> bool:
        """The node's attempt was cancelled: booked if it holds a reservation on a worker
        (else there is nothing to keep). Received: the agent accepted or listed it."""
        if state.worker is None or not reserved:
            return False
        received = state.status == "running"
        self._book[state.ref] = Stopping(state.worker, state.placed_at, received)
        return True

    def worker(self, ref: AttemptRef) -> str | None:
        stopping = self._book.get(ref)
        return None if stopping is None else stopping.worker

    def ended(self, ref: AttemptRef, worker: str) -> bool:
        """``worker`` reports ``ref`` ended: True (and forgotten) if it was stopping there."""
        stopping = self._book.get(ref)
        if stopping is None or stopping.worker != worker:
            return False
        del self._book[ref]
        return True

    def of_worker(self, worker: str) -> list[AttemptRef]:
        """Every attempt stopping on ``worker``, forgotten (the worker is gone)."""
        refs = [ref for ref, s in self._book.items() if s.worker == worker]
        for ref in refs:
            del self._book[ref]
        return refs

    def unlisted(
        self, worker: str, listed: set[AttemptRef], grace: float, now: float
    ) -> list[AttemptRef]:
        """Attempts stopping on ``worker`` its heartbeat no longer lists, forgotten: ended.
        One never accepted may just not have arrived yet: absent past ``grace`` after its
        dispatch, it never will (as ``recovery.lost_in_transit``)."""
        gone = [
            ref
            for ref, s in self._book.items()
            if s.worker == worker
            and ref not in listed
            and (s.received or now - s.placed_at > grace)
        ]
        for ref in gone:
            del self._book[ref]
        return gone
