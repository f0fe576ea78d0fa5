"""``LocalFleetBroker``: ``FleetBroker`` on a ``LocalFleet``, for users' tests without NATS.

The counterpart of taskiq's ``InMemoryBroker`` for fleet apps: ``kiq``, ``wait_result``,
batching (``batch=True``) and every pipeline go through the coordinator's scheduler with
in-process workers, so resource requests, retries, timeouts and ``max_parallel`` behave as on
the cluster. ``wait_all()`` flushes queued batches and waits for every run, as
``InMemoryBroker.wait_all`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from coordinator.backend import Backend
from coordinator.broker import FleetBroker
from coordinator.inprocess import LocalFleet
from shared.resources import WorkerSpec

__all__ = ["LocalFleetBroker"]


class LocalFleetBroker(FleetBroker):
    """Without ``workers``, one worker with this host's capacity, as ``fleet agent`` sees it."""

    def __init__(
        self,
        workers: Sequence[WorkerSpec | Mapping[str, Any]] | None = None,
        *,
        policy: str | None = None,
        max_parallel: int | None = None,
    ) -> None:
        super().__init__(nats="in-process")
        # a bad worker is refused here, not at startup
        self._workers = None if workers is None else [WorkerSpec.model_validate(w) for w in workers]
        self._policy = policy
        self._max_parallel = max_parallel
        self.fleet: LocalFleet | None = None

    async def _connect(self) -> Backend:
        self.fleet = LocalFleet(
            self, self._workers, policy=self._policy, max_parallel=self._max_parallel
        )
        return self.fleet

    async def wait_all(self) -> None:
        await self.batches.flush()
        if self.fleet is not None:
            await self.fleet.wait_all()

    async def shutdown(self) -> None:
        """Queued items and running work finish first: they live only in this process."""
        if self.client is not None:
            await self.wait_all()
        await super().shutdown()
