"""Batching at the coordinator, with ``FleetBroker`` against a real cluster (taskiq PR
#634): members from several producer processes share batches, a producer may exit right
after ``kiq``, ``Task(task_id)`` finds a member's element, and a coordinator killed with
SIGKILL mid-batch loses and runs again nothing."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskiq_fleet import Task
from tests.e2e import batch_app
from tests.e2e.cluster import Cluster, broker_cluster
from tests.processes import ROOT, until_exists

APP = "tests.e2e.batch_app:broker"


@pytest.fixture
async def cluster(nats_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    agents = {"cpu": ["--cpus", "4", "--ram-mb", "8192"]}
    async with broker_cluster(nats_url, tmp_path, batch_app.broker, APP, agents) as c:
        yield c


async def batch_of(cluster: Cluster, task_id: str) -> str | None:
    """The batch run a member is in, from the member's own run."""
    assert cluster.client is not None
    view = await cluster.client.status(task_id)
    assert view is not None
    return view.nodes[0].batch


async def produce(url: str, task: str, items: list[int], *flags: str) -> list[str]:
    """A producer process: kiqs ``items`` of ``task``, exits; its task ids."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.e2e.batch_producer",
        url,
        task,
        *map(str, items),
        *flags,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-3000:]
    ids: list[str] = json.loads(out.decode().splitlines()[-1])
    return ids


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
    members = [await batch_of(cluster, t.task_id) for t in tasks]
    runs = set(members)
    assert len(runs) == 7
    assert cluster.client is not None
    for run_id in runs:
        assert run_id is not None
        view = await cluster.client.status(run_id)
        assert view is not None
        assert view.status == "succeeded"
        assert len(view.nodes) == 1  # one node per batch: resources reserved once
    assert sorted(members.count(r) for r in runs) == [40, 60, 60, 60, 60, 60, 60]


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
    in_a = {await batch_of(cluster, t.task_id) for t in a}
    in_b = {await batch_of(cluster, t.task_id) for t in b}
    assert len(in_a) == len(in_b) == 1
    assert in_a != in_b


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


async def test_two_producer_processes_share_one_batch(cluster: Cluster) -> None:
    """``pair`` runs only as a full batch of 8: each producer sends 4 and exits, so the
    batch holds both producers' items (items of two producers used to never meet)."""
    first, second = await asyncio.gather(
        produce(cluster.url, "pair", [0, 1, 2, 3]), produce(cluster.url, "pair", [4, 5, 6, 7])
    )
    found = [await Task(t, batch_app.broker).wait_result(timeout=30) for t in first + second]
    assert [r.return_value for r in found] == [0, 10, 20, 30, 40, 50, 60, 70]
    assert len({await batch_of(cluster, t) for t in first + second}) == 1


async def test_a_producer_that_exits_right_after_kiq_loses_nothing(cluster: Cluster) -> None:
    """The producer ends without ``shutdown()`` right after its ``kiq``s returned; its
    members are durable at the coordinator, formed at ``batch_timeout`` (they used to be
    lost with the producer's buffer), and each is found by its task id alone."""
    ids = await produce(cluster.url, "late", [1, 2], "--exit-now")
    found = [await Task(t, batch_app.broker).wait_result(timeout=30) for t in ids]
    assert [r.return_value for r in found] == [101, 102]
    assert await Task(ids[0], batch_app.broker).get_status() == "COMPLETED"


async def test_a_coordinator_killed_mid_batch_loses_and_doubles_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    """SIGKILL while the batch runs on its agent: the restarted coordinator rebuilds the
    batch from the store, adopts the running attempt, and ends each member with its own
    element; the batch function ran once (one line in its log)."""
    log = tmp_path / "gated.log"
    tasks = [await batch_app.gated.kiq(i, str(log)) for i in range(4)]
    await until_exists(log)  # the batch runs on the agent, held at its gate
    batch = await batch_of(cluster, tasks[0].task_id)
    assert batch is not None
    await cluster.checkpointed(batch)
    assert cluster.coordinator is not None
    cluster.coordinator.kill()
    cluster.start_coordinator()
    log.with_name(log.name + ".go").touch()
    results = [await t.wait_result(timeout=40) for t in tasks]
    assert [r.return_value for r in results] == [0, 2, 4, 6], cluster.logs()[-3000:]
    assert log.read_text().splitlines() == ["[0, 1, 2, 3]"]
    assert [await batch_of(cluster, t.task_id) for t in tasks] == [batch] * 4


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
    assert "hang script: 400 results, all ok=True, 7 batches" in result.stdout
    assert "a producer that exited after kiq -> [101, 102]" in result.stdout
    assert "scale per factor -> [0, 10, 20, 0, 100, 200]" in result.stdout
