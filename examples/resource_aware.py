"""Resource-aware placement and parallelism (Optimization API; Performance guide §2-3).

``python -m examples.resource_aware`` starts three agents of different shapes: ``cpu``
(2 cores, 2 GB), ``bigmem`` (8 cores, 24 GB) and ``gpu`` (4 cores, 8 GB, one L4 stated
as ``gpus="1xL4:24576"``). Then:

1. one dataflow whose tasks state what they need with ``CPUProfile``, ``RAMProfile``,
   ``GPUProfile`` and ``TaskResourceProfile``: each lands on an agent it fits;
2. ``ResourceAwareExecutor().get_optimal_parallelism(...)``: what this host could run;
3. ``ClusterAwareExecutor().fit(workers, LIGHT)``: what the live pool can run at once,
   from each agent's free capacity, used as ``DataflowPipeline(max_parallel=...)``.
"""

from __future__ import annotations

from collections import Counter

from examples import fleet
from examples.flow_tasks import (
    LIGHT,
    embed,
    extract,
    fetch_metadata,
    heavy_computation,
    light_task,
    memory_intensive,
    profile_tracks,
)
from taskiq_fleet import (
    ClusterAwareExecutor,
    DataflowPipeline,
    FleetBroker,
    ResourceAwareExecutor,
    request_of,
)

AGENTS = fleet.ALL
TASKS = [extract, profile_tracks, heavy_computation, memory_intensive, embed, fetch_metadata]


async def scenario(broker: FleetBroker) -> None:
    print("resource-aware: each task asks for what it needs and lands where it fits")
    idle = await broker.connected().workers()
    executor = ClusterAwareExecutor()
    pipeline = DataflowPipeline.from_tasks(broker, TASKS)
    await pipeline.kiq_dataflow(tracks=["intro.mp3", "a.wav", "outro.flac"])
    view = await fleet.run_view(broker, pipeline.pipeline_id)
    for task, node in zip(TASKS, view.nodes, strict=True):
        asks = request_of(task)
        fits = ",".join(sorted(w.spec.name for w in idle if executor.fit([w], asks).per_worker))
        ran = f"{node.worker}" + (f" (gpu {node.gpu_devices[0]})" if node.gpu_devices else "")
        print(f"  {node.id:<19} asks {asks.describe():<16} fits {fits:<14} ran on {ran}")

    local = ResourceAwareExecutor().get_optimal_parallelism(
        task_memory_estimate=LIGHT.estimated_memory_mb,
        task_cpu_estimate=LIGHT.estimated_cpu_cores,
    )
    print(f"\nResourceAwareExecutor (this host, psutil): {local} light at once")

    workers = await broker.connected().workers()
    for name, need in (("heavy_computation", request_of(heavy_computation)), ("light", LIGHT)):
        fit = executor.fit(workers, need)
        per_worker = ", ".join(f"{w} {n}" for w, n in sorted(fit.per_worker.items()))
        print(f"ClusterAwareExecutor: {fit.parallelism} {name} at once ({per_worker})")
    optimal = executor.get_optimal_parallelism(workers, LIGHT)

    items = list(range(1, 2 * optimal + 1))
    print(f"\nDataflowPipeline(broker, max_parallel={optimal}).map(light_task, {len(items)} items)")
    mapped = DataflowPipeline(broker, max_parallel=optimal)
    mapped.map(light_task, items, output="results")
    results = (await mapped.kiq_dataflow())["results"]
    print(f"  results = {results[:5]} ... {results[-1]}: {len(results)} values")
    view = await fleet.run_view(broker, mapped.pipeline_id)
    spread = dict(sorted(Counter(node.worker for node in view.nodes).items()))
    print(f"  ran on {spread}, at most {fleet.peak_parallelism(view)} at once")


if __name__ == "__main__":
    fleet.run(scenario, AGENTS)
