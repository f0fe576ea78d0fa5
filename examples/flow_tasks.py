"""The documents' flow examples as tasks on the project's broker.

APP ``examples.flow_tasks:broker``. The audio dataflow of the Execution guide: ``extract``
feeds ``tag`` and ``embed`` in parallel, and ``embed`` asks for a GPU, so the coordinator
sends it to the GPU agent.
"""

from __future__ import annotations

from coordinator.broker import FleetBroker
from shared import CPUProfile, GPUProfile
from shared.flow import RetryException, pipeline_task
from worker_agent.executor import current_attempt, current_gpu_devices

broker = FleetBroker()


@broker.task
@pipeline_task(output="features")
def extract(tracks: list[str]) -> dict[str, int]:
    return {track: len(track) for track in tracks}


@broker.task
@pipeline_task(output="tags")
@CPUProfile(cpu_units=1)
def tag(features: dict[str, int]) -> list[str]:
    return sorted(name for name, size in features.items() if size > 5)


@broker.task
@pipeline_task(output="embedding")
@GPUProfile(gpus=1)
async def embed(features: dict[str, int]) -> dict[str, object]:
    return {"vector": sorted(features.values()), "gpu_devices": list(current_gpu_devices())}


@broker.task
def square(x: int) -> int:
    return x * x


@broker.task
def add_all(values: list[int]) -> int:
    return sum(values)


@broker.task
def flaky_fetch(url: str) -> str:
    """Fails its first two attempts with RetryException, then succeeds."""
    attempt = current_attempt() or 1
    if attempt < 3:
        raise RetryException(f"attempt {attempt}: network error, retry allowed")
    return f"fetched {url} on attempt {attempt}"
