"""Where a pipeline's DAG runs: the fleet, through the project's broker, or in process.

A pipeline built on ``FleetBroker`` submits to the coordinator; one built on any
other taskiq broker (``InMemoryBroker`` in a user's tests) runs on a
``LocalFleet``: the same scheduler with in-process workers and no NATS.
"""

from __future__ import annotations

import weakref
from typing import Any

from taskiq import AsyncBroker

from taskiq_fleet.backend import Backend

_local: weakref.WeakKeyDictionary[AsyncBroker, Any] = weakref.WeakKeyDictionary()


def runner_for(broker: AsyncBroker) -> Backend:
    from taskiq_fleet.broker import FleetBroker

    if isinstance(broker, FleetBroker):
        runner: Backend = broker.connected()
        return runner
    fleet = _local.get(broker)
    if fleet is None:
        from taskiq_fleet.inprocess import LocalFleet
        from taskiq_fleet.optimization import get_max_parallel_tasks

        fleet = _local[broker] = LocalFleet(broker, max_parallel=get_max_parallel_tasks())
    local: Backend = fleet
    return local


def use_local_fleet(broker: AsyncBroker, fleet: Any) -> None:
    """Run this broker's pipelines on a given ``LocalFleet`` (e.g. with several workers)."""
    _local[broker] = fleet


def local_fleets() -> list[Any]:
    """The in-process fleets made for plain taskiq brokers (``set_max_parallel_tasks``)."""
    return list(_local.values())
