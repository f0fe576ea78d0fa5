"""Where a pipeline's DAG runs: the fleet, through the project's broker, or in process.

A pipeline built on ``FleetBroker`` submits to the coordinator; one built on any
other taskiq broker (``InMemoryBroker`` in a user's tests) runs on a
``LocalFleet``: the same scheduler with in-process workers and no NATS.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from taskiq import AsyncBroker

from shared.dag import Dag, RunOptions, check_inputs
from taskiq_fleet import limits
from taskiq_fleet.backend import Backend, Handle
from taskiq_fleet.broker import FleetBroker
from taskiq_fleet.inprocess import LocalFleet

_local: weakref.WeakKeyDictionary[AsyncBroker, LocalFleet] = weakref.WeakKeyDictionary()


def runner_for(broker: AsyncBroker) -> Backend:
    if isinstance(broker, FleetBroker):
        runner: Backend = broker.connected()
        return runner
    fleet = _local.get(broker)
    if fleet is None:
        fleet = _local[broker] = LocalFleet(broker, max_parallel=limits.get_max_parallel_tasks())
    local: Backend = fleet
    return local


async def submit_dag(
    broker: AsyncBroker,
    dag: Dag,
    inputs: Mapping[str, Any],
    options: RunOptions,
    run_id: str | None = None,
) -> Handle:
    """Submit a pipeline's DAG where ``broker``'s runs go. A missing or unknown input is
    refused here in one line naming it, before the submission's validation would report
    it inside a dump of the whole document."""
    check_inputs(dag, set(inputs))
    return await runner_for(broker).submit(dag, inputs, options=options, run_id=run_id)


def use_local_fleet(broker: AsyncBroker, fleet: LocalFleet) -> None:
    """Run this broker's pipelines on a given ``LocalFleet`` (e.g. with several workers)."""
    _local[broker] = fleet


@limits.on_change
def _apply_limit(limit: int | None) -> None:
    """``set_max_parallel_tasks`` applies at once to the in-process fleets of plain brokers."""
    for fleet in list(_local.values()):
        fleet.apply_max_parallel(limit)
