"""A user's task module on the project's own broker (APP ``tests.e2e.fleet_app:broker``)."""

from __future__ import annotations

import asyncio

from taskiq_fleet import CPUProfile, FleetBroker, GPUProfile, RAMProfile, current_gpu_devices

broker = FleetBroker()


@broker.task
def add(a: int, b: int) -> int:
    return a + b


@broker.task
@CPUProfile(cpu_units=2)
@RAMProfile(ram_mb=4096)
def heavy(n: int) -> int:
    return sum(range(n))


@broker.task
@GPUProfile(gpus=1)
async def on_gpu() -> list[int]:
    return list(current_gpu_devices())


@broker.task
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@broker.task(max_retries=1)
def explode(message: str) -> None:
    raise RuntimeError(message)


@broker.task
def measure(text: str, *, tail: str = "") -> list[int]:
    """Sizes of its arguments, so a test of large ones needs no large result."""
    return [len(text), len(tail)]
