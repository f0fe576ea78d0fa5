"""Batched tasks on the project's broker (APP ``tests.e2e.batch_app:broker``)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

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


@broker.task(batch=True, batch_size=8, batch_timeout=60)
def pair(items: list[int]) -> list[int]:
    """Flushed only when full: a batch of 8 from two producers of 4 holds both."""
    return [i * 10 for i in items]


@broker.task(batch=True, batch_size=3, batch_timeout=1.0)
def late(items: list[int]) -> list[int]:
    """Below its size after a producer exits: formed at its timeout."""
    return [i + 100 for i in items]


@broker.task(batch=True, batch_size=4, batch_timeout=60)
def gated(items: list[int], log: str) -> list[int]:
    """Writes each run's items as a line of ``log``, then waits for the file ``log.go``
    (created by the test once the coordinator has been killed and restarted), so the
    batch is in flight across the restart and each run of it is counted."""
    path = Path(log)
    with path.open("a") as out:
        out.write(json.dumps(items) + "\n")
    gate = path.with_name(path.name + ".go")
    while not gate.exists():  # the test process opens it
        time.sleep(0.02)
    return [i * 2 for i in items]
