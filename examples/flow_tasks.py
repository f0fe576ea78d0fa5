"""The documents' tasks, on the project's broker: every example script runs these.

APP ``examples.flow_tasks:broker``: the agents of ``examples/fleet.py`` serve this module.
Decorators stack as in the documents; only the imports differ (see the README's table).
"""

from __future__ import annotations

import asyncio
from collections import Counter

from taskiq_fleet import (
    CPUProfile,
    FleetBroker,
    GPUProfile,
    PipelineContext,
    RAMProfile,
    RetryException,
    TaskResourceProfile,
    current_attempt,
    current_gpu_devices,
    pipeline_task,
)

broker = FleetBroker()

# -- quickstart ---------------------------------------------------------------------------


@broker.task
def add_one(value: int) -> int:
    return value + 1


@broker.task
def repeat(value: int, times: int) -> list[int]:
    return [value] * times


# -- the audio dataflow (Execution guide §1.2): extract -> (tag, embed on a GPU) -----------


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


# -- map-reduce ---------------------------------------------------------------------------


@broker.task
def square(x: int) -> int:
    return x * x


@broker.task
def add_all(values: list[int]) -> int:
    return sum(values)


@broker.task
async def count_words(text: str) -> dict[str, int]:
    await asyncio.sleep(0.1)  # long enough for max_parallel to show in the timings
    return dict(Counter(text.lower().split()))


@broker.task
def merge_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for part in counts:
        total.update(part)
    return dict(sorted(total.items(), key=lambda kv: (-kv[1], kv[0])))


# -- resource-aware (Optimization API, Performance guide §3) --------------------------------


@broker.task
@pipeline_task(
    output="profile",
    resources=TaskResourceProfile(estimated_memory_mb=512, estimated_cpu_cores=2.0),
)
async def profile_tracks(features: dict[str, int]) -> dict[str, int]:
    return {"tracks": len(features), "longest": max(features.values(), default=0)}


@broker.task
@pipeline_task(output="stats")
@CPUProfile(cpu_units=2)
@RAMProfile(ram_mb=4096)
def heavy_computation(features: dict[str, int]) -> int:
    return sum(size * size for size in features.values())


@broker.task
@pipeline_task(output="index")
@RAMProfile(ram_mb=12288)
def memory_intensive(features: dict[str, int]) -> list[str]:
    return sorted(features, key=features.__getitem__)


@broker.task
@pipeline_task(output="metadata")
@TaskResourceProfile(estimated_memory_mb=64, estimated_cpu_cores=1.0, io_bound=True)
async def fetch_metadata(features: dict[str, int]) -> dict[str, str]:
    await asyncio.sleep(0.01)  # a network call
    return {track: f"https://example.org/meta/{track}" for track in features}


LIGHT = TaskResourceProfile(estimated_memory_mb=256, estimated_cpu_cores=1.0)
"""What one ``light_task`` needs: the executors size ``max_parallel`` from it."""


@broker.task
@LIGHT
async def light_task(item: int) -> int:
    await asyncio.sleep(0.2)
    return item * item


# -- retries (Tasks guide §6, Execution guide §4) ---------------------------------------------


@broker.task
def flaky_fetch(url: str) -> str:
    """Conditional retry: fails its first two attempts with RetryException, then succeeds."""
    attempt = current_attempt() or 1
    if attempt < 3:
        raise RetryException(f"attempt {attempt}: network error, retry allowed")
    return f"fetched {url} on attempt {attempt}"


@broker.task
def call_api(endpoint: str) -> str:
    """An ordinary error on the first two attempts: retried only under a retry policy."""
    attempt = current_attempt() or 1
    if attempt < 3:
        raise ConnectionError(f"attempt {attempt}: {endpoint} unreachable")
    return f"{endpoint} answered on attempt {attempt}"


@broker.task
def validate(record: dict[str, int]) -> dict[str, int]:
    """A validation error: no retry asked, so without a policy it fails at once."""
    if record.get("age", 0) < 0:
        raise ValueError(f"invalid record {record} (attempt {current_attempt()})")
    return record


@broker.task(retry_policy={"max_retries": 3, "delay": 0.1, "backoff": 2.0, "jitter": 0.2})
def read_sensor(sensor: str) -> str:
    """Decorator-level retry (Tasks guide §6.1 ``retry_policy``), for a plain ``kiq``."""
    attempt = current_attempt() or 1
    if attempt < 2:
        raise TimeoutError(f"attempt {attempt}: {sensor} did not answer")
    return f"{sensor}=21.5C on attempt {attempt}"


# -- tracking (Execution guide §6, §9) --------------------------------------------------------


@broker.task
async def list_album(album: str) -> list[str]:
    return [f"{album}/{n:02d}.wav" for n in range(1, 5)]


@broker.task
async def loudness(track: str) -> float:
    await asyncio.sleep(0.05)
    return round(-20 + len(track) / 4, 2)


@broker.task
async def summarize(values: list[float], context: PipelineContext) -> str:
    """Declares a ``PipelineContext``: the agent fills it in."""
    return (
        f"{len(values)} tracks, loudest {max(values)} dB "
        f"(step {context.step_index}, {context.execution_mode}, on {context.worker})"
    )


@broker.task
def publish(tracks: list[str]) -> str:
    raise PermissionError(f"cannot publish {len(tracks)} tracks: the catalogue is read-only")


# -- pipeline patterns (Execution guide §5, §12, §13; Tasks guide §10) -------------------------


@broker.task
def audit(value: object) -> str:
    """A side effect for ``call_after``: what it returns is not passed on."""
    return f"audited {value}"


@broker.task
@pipeline_task(output="lyrics")
def transcribe(features: dict[str, int]) -> list[str]:
    raise RuntimeError(f"no speech model for {len(features)} tracks on this fleet")


@broker.task
@pipeline_task(output="subtitles")
def subtitle(lyrics: list[str]) -> list[str]:
    return [line.upper() for line in lyrics]


@broker.task
async def render(track: str) -> str:
    await asyncio.sleep(30)  # longer than the pipeline's timeout in the example
    return f"rendered {track}"
