"""Where a pipeline's DAG runs: the fleet, through the project's broker, or in process.

A pipeline built on ``FleetBroker`` submits to the coordinator; one built on any
other taskiq broker (``InMemoryBroker`` in a user's tests) runs on a
``LocalFleet``: the same scheduler with in-process workers and no NATS.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pydantic import JsonValue
from taskiq import AsyncBroker

from shared.dag import Dag, RunOptions
from shared.runs import NodeView, RunUpdate, RunView


class Handle(Protocol):
    run_id: str
    nodes: dict[str, NodeView]
    view: RunView | None

    def on_update(self, listener: Callable[[RunUpdate], None]) -> None: ...
    async def wait(self, timeout: float | None = None) -> RunView: ...
    async def result(self, timeout: float | None = None) -> dict[str, JsonValue]: ...
    async def cancel(self) -> None: ...


class Runner(Protocol):
    async def submit(
        self,
        dag: Dag,
        inputs: Mapping[str, Any] | None = None,
        *,
        name: str = ...,
        options: RunOptions | None = ...,
        run_id: str | None = ...,
        progress: bool = ...,
    ) -> Handle: ...


_local: weakref.WeakKeyDictionary[AsyncBroker, Any] = weakref.WeakKeyDictionary()


def runner_for(broker: AsyncBroker) -> Runner:
    from coordinator.broker import FleetBroker

    if isinstance(broker, FleetBroker):
        runner: Runner = broker.connected()
        return runner
    fleet = _local.get(broker)
    if fleet is None:
        from coordinator.inprocess import LocalFleet

        fleet = _local[broker] = LocalFleet(broker)
    local: Runner = fleet
    return local


def use_local_fleet(broker: AsyncBroker, fleet: Any) -> None:
    """Run this broker's pipelines on a given ``LocalFleet`` (e.g. with several workers)."""
    _local[broker] = fleet
