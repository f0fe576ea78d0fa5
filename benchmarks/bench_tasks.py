"""Tasks for the throughput benchmark (APP ``benchmarks.bench_tasks:broker``)."""

from __future__ import annotations

from typing import Any

from taskiq_fleet import FleetBroker

broker = FleetBroker()


@broker.task("noop")
async def noop(x: Any = None) -> Any:
    return x
