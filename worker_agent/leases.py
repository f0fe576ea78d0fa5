"""The agent's side of worker leases (``coordinator/scheduling/leases.py``).

The coordinator may send several attempts under one lease: the first admitted makes the
reservation, the others share it and run one after another, in the order they came, and
the reservation is released when the last has ended. Attempts of no lease run at once
under a reservation of their own, as before.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from shared.wire.protocol import AttemptRef


@dataclass(slots=True)
class _Held:
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Fair (first come, first served): attempts run in the order they were admitted."""
    members: int = 0


class AgentLeases:
    def __init__(self) -> None:
        self._held: dict[AttemptRef, _Held] = {}

    def active(self, key: AttemptRef) -> bool:
        """The lease's reservation is held here: another attempt under it shares it."""
        return key in self._held

    def join(self, key: AttemptRef) -> asyncio.Lock:
        """An attempt admitted under the lease; it runs once it holds the returned turn."""
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = _Held()
        held.members += 1
        return held.turn

    def behind(self, key: AttemptRef) -> bool:
        """More than one attempt holds the lease: the last to join waits for its turn."""
        return self._held[key].members > 1

    def leave(self, key: AttemptRef) -> bool:
        """An attempt of the lease ended; True when it was the last (release the
        reservation)."""
        held = self._held[key]
        held.members -= 1
        if held.members:
            return False
        del self._held[key]
        return True
