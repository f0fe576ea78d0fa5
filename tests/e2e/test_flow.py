"""The documents' pipeline API on a real cluster: coordinator and agents as processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskiq_fleet import DataflowPipeline, MapReduce, Pipeline
from tests.e2e import flow_app
from tests.e2e.cluster import Cluster, broker_cluster

APP = "tests.e2e.flow_app:broker"


@pytest.fixture
async def cluster(nats_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    agents = {
        "cpu": ["--cpus", "2", "--ram-mb", "4096"],
        "gpu": ["--cpus", "2", "--ram-mb", "4096", "--gpus", "1xL4:24576"],
    }
    async with broker_cluster(nats_url, tmp_path, flow_app.broker, APP, agents) as c:
        yield c


async def test_dataflow_wires_by_names_and_routes_by_profile(cluster: Cluster) -> None:
    pipeline = DataflowPipeline.from_tasks(
        flow_app.broker, [flow_app.extract, flow_app.tag, flow_app.embed, flow_app.split]
    )
    text = pipeline.print_dag()
    assert "level 1" in text
    results = await pipeline.kiq_dataflow(tracks=["a.mp3", "longer.mp3", "b.wav"])
    assert results["tags"] == ["a.mp3", "b.wav", "longer.mp3"]
    assert results["embedding"] == {"vector": [5, 5, 10], "gpus": [0]}
    assert (results["head"], results["tail"]) == (["a.mp3"], ["b.wav", "longer.mp3"])
    assert cluster.client is not None
    assert pipeline.pipeline_id is not None
    view = await cluster.client.status(pipeline.pipeline_id)
    assert view is not None
    embed = next(n for n in view.nodes if n.task.endswith(":embed"))
    assert embed.worker == "gpu"


async def test_map_reduce_with_max_parallel(cluster: Cluster) -> None:
    mapped = await MapReduce.map(flow_app.broker, flow_app.square, [1, 2, 3, 4], max_parallel=2)
    assert mapped.return_value == [1, 4, 9, 16]
    total = await MapReduce(flow_app.broker, flow_app.square, flow_app.total).kiq_map_reduce(
        items=[1, 2, 3]
    )
    assert total == 14


async def test_sequential_pipeline(cluster: Cluster) -> None:
    pipeline = Pipeline(flow_app.broker).call_next(flow_app.double).call_next(flow_app.square)
    task = await pipeline.kiq(3)
    result = await task.wait_result(timeout=30)
    assert result.return_value == 36
    assert task.is_finished
    assert not task.is_failed


SUBMIT_AND_EXIT = """
import asyncio, sys
from taskiq_fleet.flow import Pipeline
from tests.e2e import flow_app

async def main() -> None:
    flow_app.broker.nats = sys.argv[1]
    await flow_app.broker.startup()
    pipeline = Pipeline(flow_app.broker).call_next(flow_app.double).call_next(flow_app.square)
    task = await pipeline.map(flow_app.square, items=[1, 2]).call_next(flow_app.total).kiq(3)
    print(task.task_id, flush=True)
    await flow_app.broker.shutdown()

asyncio.run(main())
"""


async def test_a_pipeline_is_fetched_by_task_id_after_its_submitter_exits(
    cluster: Cluster,
) -> None:
    """Execution guide §3.3: only the task id crosses to this process; the submitting
    process has exited, and the coordinator runs the pipeline to its end."""
    import asyncio
    import sys

    from taskiq_fleet import Task
    from tests.processes import ROOT

    submitter = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SUBMIT_AND_EXIT,
        cluster.url,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(submitter.communicate(), 60)
    assert submitter.returncode == 0, err.decode()[-3000:]
    task_id = out.decode().strip()
    task = Task(task_id=task_id, broker=flow_app.broker)
    result = await task.wait_result(timeout=30)
    assert result.return_value == 5  # the last step: total of the mapped squares 1 + 4
    assert await task.get_status() == "COMPLETED"
    assert await Task(task_id="no-such-task", broker=flow_app.broker).get_status() == "PENDING"
    assert cluster.client is not None
    view = await cluster.client.status(task_id)
    assert view is not None
    assert [n.status for n in view.nodes] == ["succeeded"] * 5
