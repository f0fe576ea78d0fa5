"""The documents' audio dataflow on the project's broker (APP ``tests.e2e.flow_app:broker``)."""

from __future__ import annotations

from taskiq_fleet import (
    CPUProfile,
    FleetBroker,
    GPUProfile,
    current_gpu_devices,
    pipeline_task,
    pipeline_task_multi_output,
)

broker = FleetBroker()


@broker.task
@pipeline_task(output="features")
def extract(tracks: list[str]) -> dict[str, int]:
    return {t: len(t) for t in tracks}


@broker.task
@pipeline_task(output="tags")
@CPUProfile(cpu_units=1)
def tag(features: dict[str, int]) -> list[str]:
    return sorted(k for k, v in features.items() if v > 4)


@broker.task
@pipeline_task(output="embedding")
@GPUProfile(gpus=1)
async def embed(features: dict[str, int]) -> dict[str, object]:
    return {"vector": sorted(features.values()), "gpus": list(current_gpu_devices())}


@broker.task
@pipeline_task_multi_output(outputs=["head", "tail"])
def split(tags: list[str]) -> tuple[list[str], list[str]]:
    return tags[:1], tags[1:]


@broker.task
def square(x: int) -> int:
    return x * x


@broker.task
def total(values: list[int]) -> int:
    return sum(values)


@broker.task
def double(x: int) -> int:
    return 2 * x
