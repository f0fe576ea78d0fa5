"""``await task.kiq()`` through the coordinator, and ``wait_result()``, on the project's broker."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e import fleet_app
from tests.e2e.cluster import Cluster, broker_cluster

APP = "tests.e2e.fleet_app:broker"


@pytest.fixture
async def cluster(nats_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    agents = {
        "cpu": ["--cpus", "2", "--ram-mb", "8192"],
        "gpu": ["--cpus", "2", "--ram-mb", "2048", "--gpus", "1xT4:16384"],
    }
    async with broker_cluster(nats_url, tmp_path, fleet_app.broker, APP, agents) as c:
        yield c


async def test_kiq_and_wait_result(cluster: Cluster) -> None:
    task = await fleet_app.add.kiq(2, 3)
    result = await task.wait_result(timeout=20)
    assert not result.is_err
    assert result.return_value == 5
    assert await task.is_ready()


async def test_resources_route_each_task(cluster: Cluster) -> None:
    heavy, gpu = await asyncio.gather(fleet_app.heavy.kiq(10), fleet_app.on_gpu.kiq())
    assert (await heavy.wait_result(timeout=20)).return_value == 45
    assert (await gpu.wait_result(timeout=20)).return_value == [0]
    assert cluster.client is not None
    heavy_view = await cluster.client.status(heavy.task_id)
    gpu_view = await cluster.client.status(gpu.task_id)
    assert heavy_view is not None
    assert gpu_view is not None
    assert heavy_view.nodes[0].worker == "cpu"  # only it has 4 GB free
    assert gpu_view.nodes[0].worker == "gpu"


async def test_errors_come_back_after_retries(cluster: Cluster) -> None:
    task = await fleet_app.explode.kiq("kaboom")
    result = await task.wait_result(timeout=20)
    assert result.is_err
    assert isinstance(result.error, RuntimeError)  # the task's class, as plain taskiq gives it
    assert str(result.error) == "kaboom"
    assert cluster.client is not None
    view = await cluster.client.status(task.task_id)
    assert view is not None
    assert view.nodes[0].attempt == 2


async def test_many_concurrent_kiqs(cluster: Cluster) -> None:
    tasks = await asyncio.gather(*(fleet_app.add.kiq(i, i) for i in range(200)))
    results = await asyncio.gather(*(t.wait_result(timeout=60) for t in tasks))
    assert [r.return_value for r in results] == [2 * i for i in range(200)]


async def test_wait_result_times_out(cluster: Cluster) -> None:
    from taskiq.exceptions import TaskiqResultTimeoutError

    task = await fleet_app.nap.kiq(1)
    with pytest.raises(TaskiqResultTimeoutError):
        await task.wait_result(timeout=0.2)


async def test_the_global_cap_changes_while_running(cluster: Cluster) -> None:
    client = fleet_app.broker.connected()
    await client.set_max_parallel(1)
    try:
        empty = await client.nc.request("fleet.ctl.limit", b"", timeout=5)
        assert b"'limit' needs max_parallel" in empty.data  # junk does not lift the cap
        tasks = await asyncio.gather(*(fleet_app.nap.kiq(0.2) for _ in range(3)))
        for task in tasks:
            assert not (await task.wait_result(timeout=30)).is_err
        views = [await client.status(t.task_id) for t in tasks]
        spans = sorted(
            (v.nodes[0].started_at or 0.0, v.nodes[0].finished_at or 0.0) for v in views if v
        )
        assert len(spans) == 3
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end - 0.01, spans  # one at a time
    finally:
        await client.set_max_parallel(None)


async def test_arguments_larger_than_a_nats_message_are_kiqd(cluster: Cluster) -> None:
    """Each travels apart (the payload stream); a small one beside it stays inline. Before,
    kiq raised a bare ``SendTaskError`` for anything over the server's 1 MB message."""
    big, bigger = "x" * (3 << 20), "y" * (2 << 20)
    task = await fleet_app.measure.kiq(big, tail=bigger)
    result = await task.wait_result(timeout=60)
    assert not result.is_err, result.error
    assert result.return_value == [len(big), len(bigger)]
    small = await (await fleet_app.measure.kiq("abc", tail=bigger)).wait_result(timeout=60)
    assert small.return_value == [3, len(bigger)]


async def test_a_submission_larger_than_a_nats_message_is_refused_with_why(
    cluster: Cluster,
) -> None:
    from taskiq_fleet import Dag, FleetError, Node

    assert cluster.client is not None
    dag = Dag(nodes=(Node(id="n", task="measure", kwargs={"text": "z" * (2 << 20)}),))
    with pytest.raises(FleetError, match="more than the NATS server takes in one message"):
        await cluster.client.submit(dag)
