"""``LocalFleetBroker``: ``FleetBroker`` on a ``LocalFleet``, for users' tests without NATS.

The counterpart of taskiq's ``InMemoryBroker`` for fleet apps: ``kiq``, ``wait_result``,
batching (``batch=True``) and every pipeline go through the coordinator's scheduler with
in-process workers, so resource requests, retries, timeouts and ``max_parallel`` behave as on
the cluster. ``wait_all()`` flushes queued batches and waits for every run, as
``InMemoryBroker.wait_all`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from shared.resources import WorkerSpec
from taskiq_fleet.backend import Backend
from taskiq_fleet.broker import FleetBroker
from taskiq_fleet.inprocess import LocalFleet

__all__ = ["LocalFleetBroker"]


class LocalFleetBroker(FleetBroker):
    """Without ``workers``, one worker with this host's capacity, as ``fleet agent`` sees it.

    ``shutdown()`` runs what is queued first, as taskiq flushes batches on shutdown, but
    waits at most ``drain_timeout`` seconds for it (as ``fleet agent --drain-timeout``):
    then what still runs is cancelled, so a stuck task cannot hang a test's teardown."""

    def __init__(
        self,
        workers: Sequence[WorkerSpec | Mapping[str, Any]] | None = None,
        *,
        policy: str | None = None,
        max_parallel: int | None = None,
        drain_timeout: float = 30.0,
    ) -> None:
        super().__init__(nats="in-process")
        self._fleet_args: tuple[
            Sequence[WorkerSpec | Mapping[str, Any]] | None, str | None, int | None
        ] = (workers, policy, max_parallel)
        self.drain_timeout = drain_timeout
        self.fleet = self._new_fleet()  # bad workers or policy are refused here

    def _new_fleet(self) -> LocalFleet:
        workers, policy, max_parallel = self._fleet_args
        return LocalFleet(self, workers, policy=policy, max_parallel=max_parallel)

    async def _connect(self) -> Backend:
        if self.fleet.closed:  # started again after a shutdown
            self.fleet = self._new_fleet()
        return self.fleet

    async def wait_all(self) -> None:
        await self.batches.flush()
        await self.fleet.wait_all()

    async def shutdown(self) -> None:
        if self.client is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wait_all(), self.drain_timeout)
        await super().shutdown()
