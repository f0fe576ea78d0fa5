"""The documents' task examples, decorated exactly as the Tasks and Performance guides show.

APP ``taskiq_fleet.demo.tasks:broker``: ``fleet up``'s agents serve it unless told otherwise.
Only the import lines differ from the documents: the profiles come from ``taskiq_fleet``
instead of ``taskiq_flow``.
"""

from __future__ import annotations

from typing import Any

from taskiq import AsyncTaskiqDecoratedTask, InMemoryBroker

from taskiq_fleet import (
    CPUProfile,
    GPUProfile,
    LabelProfile,
    RAMProfile,
    ResourceLabelsMiddleware,
    TaskResourceProfile,
)

broker = InMemoryBroker().with_middlewares(ResourceLabelsMiddleware())


@broker.task
@CPUProfile(cpu_units=2)
@RAMProfile(ram_mb=4096)
def heavy_computation(data: list[float]) -> float:
    return sum(x * x for x in data)


@broker.task
@RAMProfile(ram_mb=2048)
def memory_intensive(data: list[int]) -> int:
    return len(set(data))


@broker.task
@CPUProfile(cpu_units=4)
@RAMProfile(ram_mb=4096)
def gpu_style_task(data: list[float]) -> float:
    return max(data, default=0.0)


@broker.task
@TaskResourceProfile(estimated_memory_mb=512, estimated_cpu_cores=2.0)
async def estimated_task(data: dict[str, int]) -> dict[str, int]:
    return {k: v * 2 for k, v in data.items()}


@broker.task
@TaskResourceProfile(estimated_memory_mb=256, estimated_cpu_cores=1.0, io_bound=True)
async def fetch_url(url: str) -> str:
    return url


@broker.task
@CPUProfile(cpu_units=1)
@LabelProfile(required={"gpu": True})
def needs_gpu_host(data: list[float]) -> int:
    return len(data)


@broker.task
@CPUProfile(cpu_units=0.5)
@LabelProfile(required=["gpu!=true"])
def background_cleanup(path: str) -> str:
    return path


@broker.task
@GPUProfile(gpus=1, models=["A100", "H100"])
def train_model(epochs: int) -> int:
    return epochs


@broker.task
@CPUProfile(cpu_units=16)
def whole_cluster_job(n: int) -> int:
    return n


ALL_TASKS: list[AsyncTaskiqDecoratedTask[Any, Any]] = [
    heavy_computation,
    memory_intensive,
    gpu_style_task,
    estimated_task,
    fetch_url,
    needs_gpu_host,
    background_cleanup,
    train_model,
    whole_cluster_job,
]
