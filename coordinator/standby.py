"""Several coordinators, one leader: the loop every ``fleet coordinator`` process runs.

Each process keeps the lease (``coordinator/lease.py``) and, while it stands by, listens
to the agents' heartbeats, so at a takeover it knows which workers to ask for a report.
When it wins the lease it serves a term: a fresh ``Coordinator`` (its own scheduler and
incarnation) restores the runs from the store, replays what the last leader received but
had not acknowledged, asks every known agent to register again (their registrations list
what they run), and places once they have answered. When the lease is lost the term
ends: the coordinator stops acting at once (its lease ran out before a standby could
claim) and goes back to standing by; the new leader's term fences anything late.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from coordinator.lease import LeaseKeeper, open_bucket
from coordinator.service import Coordinator, CoordinatorSettings

log = structlog.get_logger(__name__)

HEARD_FOR = 30.0
"""A worker heard from within this many seconds is asked to report at a takeover."""


class Heard:
    """The workers whose heartbeats reached this process recently (by subject only)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._at: dict[str, float] = {}
        self._clock = clock

    def heard(self, worker: str) -> None:
        self._at[worker] = self._clock()

    def recent(self) -> list[str]:
        now = self._clock()
        for name in [n for n, at in self._at.items() if now - at > HEARD_FOR]:
            del self._at[name]
        return sorted(self._at)


class Fleet:
    """One process's coordinator role across terms: the NATS callbacks go to the current term."""

    def __init__(self, settings: CoordinatorSettings) -> None:
        self.settings = settings
        self.timing = settings.lease
        self.me = secrets.token_hex(8)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.heard = Heard()
        self.current: Coordinator | None = None

    async def disconnected(self) -> None:
        if self.current is not None:
            await self.current.disconnected()

    async def reconnected(self) -> None:
        if self.current is not None:
            await self.current.reconnected()

    async def run(self, nc: Client, stop: asyncio.Event) -> None:
        s = self.settings.subjects
        keeper = LeaseKeeper(await open_bucket(nc.jetstream(), s), self.me, self.name, self.timing)

        async def on_heartbeat(msg: Msg) -> None:
            with contextlib.suppress(ValueError):
                self.heard.heard(s.parse_sender(msg.subject)[1])

        listening = await nc.subscribe(s.all_heartbeats, cb=on_heartbeat)
        leasing = asyncio.create_task(keeper.run())
        log.info("coordinator standing by", id=self.me, name=self.name)
        try:
            while await _first(keeper.leading, stop):
                await self._term(nc, keeper, stop)
                if not stop.is_set():
                    log.info("coordinator standing by", id=self.me, name=self.name)
        finally:
            leasing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await leasing
            await keeper.release()
            await listening.unsubscribe()

    async def _term(self, nc: Client, keeper: LeaseKeeper, stop: asyncio.Event) -> None:
        ended = asyncio.Event()

        async def watch() -> None:
            await _first(keeper.deposed, stop)
            ended.set()

        watching = asyncio.create_task(watch())
        self.current = Coordinator(self.settings, lease=keeper, expect=self.heard.recent())
        try:
            await self.current.run(nc, ended)
        finally:
            watching.cancel()
            self.current = None


async def _first(wanted: asyncio.Event, stop: asyncio.Event) -> bool:
    """Until ``wanted`` or ``stop`` is set; True if ``wanted`` came first (and no stop)."""
    waits = [asyncio.create_task(wanted.wait()), asyncio.create_task(stop.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    return wanted.is_set() and not stop.is_set()
