"""The Execution guide's audio dataflow: ``extract`` -> (``tag`` and ``embed`` in parallel).

``python -m examples.audio_dataflow`` starts a CPU agent and an agent with one L4 GPU.
``DataflowPipeline.from_tasks`` wires the tasks by their ``@pipeline_task`` output names
(``tag`` and ``embed`` take ``features``); ``embed`` carries ``@GPUProfile(gpus=1)``, so
the coordinator places it on the GPU agent, which gives it device 0; the other two stay
on the CPU agent. ``kiq_dataflow`` returns every output by name.
"""

from __future__ import annotations

from examples import fleet
from examples.flow_tasks import embed, extract, tag
from taskiq_fleet import DataflowPipeline, FleetBroker

AGENTS = (fleet.CPU, fleet.GPU)


async def scenario(broker: FleetBroker) -> None:
    print("audio dataflow: DataflowPipeline.from_tasks(broker, [extract, tag, embed])")
    pipeline = DataflowPipeline.from_tasks(broker, [extract, tag, embed])
    pipeline.print_dag()
    results = await pipeline.kiq_dataflow(tracks=["intro.mp3", "a.wav", "outro.flac"])
    for name, value in results.items():
        print(f"  {name} = {value}")
    print(fleet.placement(await fleet.run_view(broker, pipeline.pipeline_id)))


if __name__ == "__main__":
    fleet.run(scenario, AGENTS)
