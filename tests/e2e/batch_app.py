"""Batched tasks on the project's broker (APP ``tests.e2e.batch_app:broker``)."""

from __future__ import annotations

import asyncio

from taskiq_fleet import FleetBroker

broker = FleetBroker()


@broker.task(batch=True, batch_size=60, batch_timeout=3, task_name="tfunc")
async def tfunc(test: list[int]) -> bool:
    return True


@broker.task(batch=True, batch_size=5, batch_timeout=0.5)
def scale(items: list[int], factor: int, offset: int = 0) -> list[int]:
    """Sync, more than one parameter: batched per (factor, offset)."""
    return [i * factor + offset for i in items]


@broker.task(batch=True, batch_size=4, batch_timeout=0.5)
async def sizes(items: list[str]) -> int:
    await asyncio.sleep(0)
    return len(items)


@broker.task(batch=True, batch_size=3, batch_timeout=0.3)
def boom(items: list[int]) -> None:
    raise RuntimeError(f"bad batch {items}")
