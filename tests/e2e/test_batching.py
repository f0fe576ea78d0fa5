"""Client-side batching on ``FleetBroker`` against a real cluster (taskiq PR #634)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e import batch_app
from tests.e2e.cluster import Cluster, broker_cluster

APP = "tests.e2e.batch_app:broker"


@pytest.fixture
async def cluster(nats_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    agents = {"cpu": ["--cpus", "4", "--ram-mb", "8192"]}
    async with broker_cluster(nats_url, tmp_path, batch_app.broker, APP, agents) as c:
        yield c


def _runs(task_ids: list[str]) -> set[str]:
    found = [batch_app.broker.batches.run_of(t) for t in task_ids]
    return {m[0] for m in found if m is not None}


async def test_the_hang_script_finishes_promptly(cluster: Cluster) -> None:
    """The maintainer's script: 400 items, batch size 60, timeout 3."""
    started = time.monotonic()
    tasks = await asyncio.gather(*[batch_app.tfunc.kiq(i) for i in range(400)])
    assert time.monotonic() - started < 2.0  # kiq queues, it does not wait for a flush
    results = await asyncio.gather(*[task.wait_result(timeout=10) for task in tasks])
    took = time.monotonic() - started
    assert len(results) == 400
    assert all(not r.is_err and r.return_value is True for r in results)
    assert took < 8.0, took  # 6 full batches at once, the last 40 after 3 s
    runs = _runs([t.task_id for t in tasks])
    assert len(runs) == 7
    assert cluster.client is not None
    for run_id in runs:
        view = await cluster.client.status(run_id)
        assert view is not None
        assert view.status == "succeeded"
        assert len(view.nodes) == 1  # one node per batch: resources reserved once
    per_run = [len(_runs([t.task_id])) for t in tasks]
    assert per_run == [1] * 400
    counts = sorted(sum(1 for t in tasks if _runs([t.task_id]) == {run_id}) for run_id in runs)
    assert counts == [40, 60, 60, 60, 60, 60, 60]


async def test_sync_multi_parameter_groups_and_per_member_results(cluster: Cluster) -> None:
    a = await asyncio.gather(*(batch_app.scale.kiq(i, 10) for i in range(5)))  # full: flushes
    b = await asyncio.gather(*(batch_app.scale.kiq(i, 2, offset=1) for i in range(3)))
    c = await batch_app.scale.kiq(items=7, factor=3)  # the item by keyword
    got_a = [(await t.wait_result(timeout=20)).return_value for t in a]
    got_b = [(await t.wait_result(timeout=20)).return_value for t in b]
    got_c = (await c.wait_result(timeout=20)).return_value
    assert got_a == [0, 10, 20, 30, 40]
    assert got_b == [1, 3, 5]
    assert got_c == 21
    assert len(_runs([t.task_id for t in a])) == 1
    assert len(_runs([t.task_id for t in b])) == 1
    assert _runs([t.task_id for t in a]).isdisjoint(_runs([t.task_id for t in b]))


async def test_a_non_list_result_goes_to_every_member(cluster: Cluster) -> None:
    tasks = await asyncio.gather(*(batch_app.sizes.kiq(s) for s in "abc"))  # times out
    assert [(await t.wait_result(timeout=20)).return_value for t in tasks] == [3, 3, 3]
    assert await tasks[0].is_ready()


async def test_a_failure_fails_every_member(cluster: Cluster) -> None:
    tasks = await asyncio.gather(*(batch_app.boom.kiq(i) for i in range(3)))
    results = [await t.wait_result(timeout=20) for t in tasks]
    assert all(r.is_err for r in results)
    assert all(isinstance(r.error, RuntimeError) for r in results)  # the task's class
    assert all(str(r.error) == "bad batch [0, 1, 2]" for r in results)


async def test_shutdown_flushes_queued_items(cluster: Cluster) -> None:
    broker = batch_app.broker
    tasks = [await batch_app.tfunc.kiq(i) for i in range(5)]
    run_id = next(iter(_runs([t.task_id for t in tasks])))
    await broker.shutdown()  # flushes before closing
    await broker.startup()
    assert cluster.client is not None
    handle = await cluster.client.follow(run_id)
    view = await handle.wait(20)
    assert view.status == "succeeded"


def test_the_batching_demo_runs() -> None:
    import subprocess
    import sys

    from tests.processes import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "examples.batching_demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hang script: 400 results, all ok=True, 7 runs" in result.stdout
    assert "scale per factor -> [0, 10, 20, 0, 100, 200]" in result.stdout
