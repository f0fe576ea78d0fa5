"""The documents' behaviour examples, with only their imports changed (in-process mode).

Import changes: ``taskiq_flow`` -> ``shared.flow`` (annotations, context, RetryException),
``coordinator.flow`` (pipelines) and ``shared`` (profiles).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from taskiq import InMemoryBroker

from coordinator.flow import DataflowPipeline, MapReduce, Pipeline, PipelineError
from shared import CPUProfile, RAMProfile
from shared.flow import PipelineContext, pipeline_task, pipeline_task_multi_output

broker = InMemoryBroker()


def compute_features(data: list[str]) -> dict[str, int]:
    return {d: len(d) for d in data}


def generate_tags(features: dict[str, Any]) -> list[str]:
    return sorted(features)


# Tasks guide §2.2
@broker.task
@pipeline_task(output="features")
def extract(data: list[str]) -> dict[str, Any]:
    return {"features": compute_features(data)}


@broker.task
@pipeline_task(output="tags")
def tag(features: dict[str, Any]) -> list[str]:
    return generate_tags(features)


# Tasks guide §2.3
@broker.task
@pipeline_task_multi_output(outputs=["x", "y"])
def split(value: int) -> tuple[int, int]:
    return value // 2, value % 2


# Tasks guide §4.3 and §5.2
class AudioFeatures(BaseModel):
    duration: float
    tempo: float
    key: str


@broker.task
@CPUProfile(cpu_units=1)
@RAMProfile(ram_mb=64)
@pipeline_task(output="audio")
async def extract_features(audio_path: str) -> AudioFeatures:
    return AudioFeatures(duration=180.0, tempo=120.0, key="C")


# Execution guide §1.3 / §6
@broker.task
def process_item(item: int) -> int:
    return item * 10


@broker.task
async def my_task(data: str, context: PipelineContext) -> str:
    assert context.pipeline_id
    assert context.task_id
    return data.upper()


async def test_tasks_guide_dataflow_wires_features_to_tag() -> None:
    pipeline = DataflowPipeline.from_tasks(broker, [extract, tag])
    results = await pipeline.kiq_dataflow(data=["a", "bb"])
    assert results["tags"] == ["features"]


async def test_tasks_guide_multi_output() -> None:
    results = await DataflowPipeline.from_tasks(broker, [split]).kiq_dataflow(value=7)
    assert (results["x"], results["y"]) == (3, 1)


async def test_tasks_guide_pydantic_output() -> None:
    results = await DataflowPipeline.from_tasks(broker, [extract_features]).kiq_dataflow(
        audio_path="a.mp3"
    )
    assert results["audio"] == {"duration": 180.0, "tempo": 120.0, "key": "C"}


async def test_execution_guide_map_with_max_parallel() -> None:
    items_list = list(range(20))
    result = await MapReduce.map(
        broker, process_item, items=items_list, output="processed", max_parallel=10
    )
    assert result.return_value == [i * 10 for i in items_list]


async def test_execution_guide_context() -> None:
    pipeline = Pipeline(broker).with_context(enable=True).call_next(my_task)
    task = await pipeline.kiq("abc")
    result = await task.wait_result()
    assert result.return_value == "ABC"


async def test_execution_guide_partial_results() -> None:
    @broker.task
    @pipeline_task(output="broken")
    def breaks(tags: list[str]) -> None:
        raise RuntimeError("disk full")

    pipeline = DataflowPipeline.from_tasks(broker, [extract, tag, breaks])
    with pytest.raises(PipelineError) as caught:
        await pipeline.kiq_dataflow(data=["a"])
    partial = caught.value.partial_results
    assert partial["tags"] == ["features"]
