"""``LocalFleetBroker``: ``FleetBroker`` on a ``LocalFleet``, for users' tests without NATS.

The counterpart of taskiq's ``InMemoryBroker`` for fleet apps: ``kiq``, ``wait_result``,
batching (``batch=True``) and every pipeline go through the coordinator's scheduler with
in-process workers, so resource requests, retries, timeouts and ``max_parallel`` behave as on
the cluster. ``wait_all()`` flushes queued batches and waits for every run, as
``InMemoryBroker.wait_all`` does.

As with ``InMemoryBroker``, ``startup()`` is optional: the first ``kiq`` starts the broker
(``shutdown()`` is still what drains it). ``await_inplace=True`` makes ``kiq`` return only
once the task has run, as ``InMemoryBroker(await_inplace=True)`` does for the documents'
test fixture (Tasks guide §8); a batched task's batch is then sent at once, without
waiting for more items (taskiq PR #634).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from shared.resources import WorkerSpec
from taskiq_fleet.backend import Backend
from taskiq_fleet.batching import BatchConfig
from taskiq_fleet.broker import FleetBroker, FleetResultBackend
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
        await_inplace: bool = False,
    ) -> None:
        super().__init__(nats="in-process")
        self.await_inplace = await_inplace
        self._starting = asyncio.Lock()
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

    async def _kick(
        self,
        task_id: str,
        task_name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        labels: dict[str, Any],
    ) -> None:
        if self.client is None:
            async with self._starting:  # many kiqs at once start it once
                if self.client is None:
                    await self.startup()
        await super()._kick(task_id, task_name, args, kwargs, labels)
        if self.await_inplace:
            if self._batched(task_name):
                self.fleet.flush_batches()
            assert isinstance(self.result_backend, FleetResultBackend)
            await self.result_backend.wait(task_id, None)

    def _batched(self, task_name: str) -> bool:
        task = self.find_task(task_name)
        return task is not None and BatchConfig.from_labels(task.labels) is not None

    async def wait_all(self) -> None:
        await self.fleet.wait_all()

    async def shutdown(self) -> None:
        if self.client is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wait_all(), self.drain_timeout)
        await super().shutdown()
