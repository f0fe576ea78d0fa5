"""When waiting run handles next ask the coordinator: one timer for a client, not one each.

A handle waits for its pushed end and asks the coordinator now and then in case the push
was lost (``RunHandle.wait``). A timer per waiting handle cost a client with 5,000 runs in
flight a third of its CPU: each timer and its context are objects that live for the poll's
10-30 s (a cancelled one stays in the loop's heap until then), so every burst of kiqs
promoted tens of thousands of them into the garbage collector's oldest generation and set
off a full collection of the whole process, the caller's objects included. Here handles
due in the same slot of time share one set, and one timer wakes the earliest slot.
"""

from __future__ import annotations

import asyncio
import math

from taskiq_fleet.handles import Flag


class Polls:
    """Flags to wake when their time comes, ``slot`` seconds at a time (rounded up)."""

    def __init__(self, slot: float) -> None:
        self._slot = slot
        self._due: dict[int, set[Flag]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot: int | None = None

    def add(self, flag: Flag, delay: float) -> int:
        """Wake ``flag`` in ``delay`` seconds or up to a slot later; the slot to ``discard``."""
        loop = asyncio.get_running_loop()
        slot = math.ceil((loop.time() + delay) / self._slot)
        flags = self._due.get(slot)
        if flags is None:
            flags = self._due[slot] = set()
            if self._timer_slot is None or slot < self._timer_slot:
                self._arm(loop, slot)
        flags.add(flag)
        return slot

    def discard(self, slot: int, flag: Flag) -> None:
        """``flag`` no longer waits (its end came first). The timer stays: cancelling and
        arming one for each lone round trip costs more than one wake for nothing."""
        flags = self._due.get(slot)
        if flags is not None:
            flags.discard(flag)
            if not flags:
                del self._due[slot]

    def _arm(self, loop: asyncio.AbstractEventLoop, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_slot = slot
        self._timer = loop.call_at(slot * self._slot, self._fire, slot)

    def _fire(self, armed: int) -> None:
        """Sets the flags of every slot up to the one armed for (the loop may run a timer a
        clock tick early) or that passed meanwhile."""
        self._timer = self._timer_slot = None
        loop = asyncio.get_running_loop()
        last = max(armed, math.floor(loop.time() / self._slot))
        for slot in sorted(s for s in self._due if s <= last):
            for flag in self._due.pop(slot):
                flag.wake()
        if self._due:
            self._arm(loop, min(self._due))
