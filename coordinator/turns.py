"""Turns for the event loop during long stretches of work on it.

The coordinator's pump, its checkpoint writes and NATS's socket reader share one event
loop. A stretch of work that never awaits (a flood of submissions parsed and queued,
thousands of runs' records built) keeps the reader from NATS's socket: heartbeats wait
unread, the server finds the coordinator a slow consumer and closes its connection, and
the leader lease is not renewed in time. Counting events does not bound such a stretch
(one submission message may carry a thousand runs), so turns are given by time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

TURN_EVERY = 0.005
"""Seconds of work after which the event loop gets a turn."""


WRITE_EVERY = 0.0005
WRITE_REST = 0.0005
"""A light checkpoint's writer works ``WRITE_EVERY`` at most, then sleeps ``WRITE_REST``
(a bare yield is not enough: a message takes four turns of the loop from the socket to
the pump). A checkpoint every 200 ms was 2-5 ms of acknowledgements and records in one
stretch, and the round trips it caught were the slowest percent."""
LIGHT_WRITES = 1000
"""A checkpoint with more runs and messages to acknowledge than this works in the pump's
turns, without rests: resting, a flood's checkpoints fell behind, and what they had yet
to write piled up (300,000 kiqs at once: the coordinator's peak RSS 1.8-2.0 GiB at 133,000
to 158,000 runs queued, against 0.53 GiB at 170,000 without rests; at a million it passed
6 GiB)."""


class Turns:
    def __init__(
        self,
        every: float = TURN_EVERY,
        clock: Callable[[], float] = time.perf_counter,
        rest: float = 0.0,
    ) -> None:
        self._every = every
        self._clock = clock
        self._rest = rest
        self._due = clock() + every

    def paced(self, work: int) -> None:
        """A writer's pace for ``work`` items: resting while light, the pump's under a flood."""
        light = work <= LIGHT_WRITES
        self._every, self._rest = (WRITE_EVERY, WRITE_REST) if light else (TURN_EVERY, 0.0)

    def rested(self) -> None:
        """The event loop just had its turn (the caller waited): count from now. Without
        this, the first event after a quiet spell yielded at once, in the middle of a
        lone round trip's pass."""
        self._due = self._clock() + self._every

    async def take(self) -> None:
        """Give the event loop a turn if ``every`` seconds went by since the last one."""
        if self._clock() >= self._due:
            await asyncio.sleep(self._rest)
            self._due = self._clock() + self._every
