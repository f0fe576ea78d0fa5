"""The documents' pipeline scenarios on a live local fleet: ``python -m examples.flow_demo``.

Starts nats-server, a coordinator and two agents (a CPU box and a box with one L4 GPU,
stated by hand), then runs the quickstart sequential pipeline, the audio dataflow (embed
lands on the GPU agent), a map-reduce with ``max_parallel`` and a retry demo, printing
where each node ran.
"""

from __future__ import annotations

import asyncio
import sys

from coordinator.flow import DataflowPipeline, MapReduce, Pipeline, PipelineTrackingManager
from coordinator.local_cluster import AgentConfig, LocalCluster
from examples import flow_tasks as t

APP = "examples.flow_tasks:broker"
AGENTS = (
    AgentConfig(name="cpu", app=APP, cpus=2, ram_mb=2048),
    AgentConfig(name="gpu", app=APP, cpus=2, ram_mb=2048, gpus="1xL4:24576"),
)


async def main() -> int:
    async with LocalCluster(AGENTS, port=0) as cluster:
        t.broker.nats = cluster.nats_url
        await t.broker.startup()
        try:
            print("quickstart: Pipeline(broker).call_next(square).call_next(square).kiq(3)")
            tracking = PipelineTrackingManager().with_auto_storage(t.broker)
            quick = Pipeline(t.broker).with_tracking(tracking)
            task = await quick.call_next(t.square).call_next(t.square).kiq(3)
            print("  ->", (await task.wait_result(timeout=30)).return_value)
            assert quick.pipeline_id is not None
            status = await tracking.get_status(quick.pipeline_id)
            assert status is not None
            print(f"  tracking: {status.status}")
            for step in status.steps:
                print(
                    f"    {step.name}: {step.status} on {step.worker} ({step.duration_ms:.0f} ms)"
                )

            print("\naudio dataflow: extract -> (tag, embed on a GPU)")
            audio = DataflowPipeline.from_tasks(t.broker, [t.extract, t.tag, t.embed])
            audio.print_dag()
            results = await audio.kiq_dataflow(tracks=["intro.mp3", "a.wav", "outro.flac"])
            for name, value in results.items():
                print(f"  {name} = {value}")
            assert audio.pipeline_id is not None
            view = await t.broker.connected().status(audio.pipeline_id)
            assert view is not None
            for node in view.nodes:
                print(f"  {node.task.rsplit(':', 1)[-1]:8} ran on {node.worker}")

            print("\nmap-reduce: squares of 1..6, two at a time, then their sum")
            mapped = await MapReduce.map(t.broker, t.square, [1, 2, 3, 4, 5, 6], max_parallel=2)
            print("  mapped ->", mapped.return_value)
            total = await MapReduce(t.broker, t.square, t.add_all).kiq_map_reduce(items=[1, 2, 3])
            print("  kiq_map_reduce([1, 2, 3]) ->", total)

            print("\nretry: a task raising RetryException twice")
            flaky = DataflowPipeline(t.broker).add_dataflow_task(t.flaky_fetch, output="page")
            print("  ->", (await flaky.kiq_dataflow(url="https://example.org"))["page"])
        finally:
            await t.broker.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
