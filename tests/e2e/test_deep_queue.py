"""What a deep queue must not break: the results of many kiqs, and queued runs across a
coordinator's kill -9 (processes, a real nats-server)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import taskiq_fleet.broker as broker_module
from shared.dag import Dag, Node
from tests.e2e import fleet_app
from tests.e2e.cluster import Cluster, broker_cluster

APP = "tests.e2e.fleet_app:broker"
KEPT = 2


@pytest.fixture
async def app_cluster(nats_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    agents = {"a1": ["--cpus", "2", "--ram-mb", "4096"]}
    async with broker_cluster(nats_url, tmp_path, fleet_app.broker, APP, agents) as c:
        yield c


async def test_each_task_keeps_its_result_however_many_were_kicked_since(
    app_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker keeps only the last few ended runs by id; a task it forgot still has
    its result, without asking the coordinator (a busy one timed such questions out:
    ``ResultGetError`` with 50,000 kiq'd at once)."""
    results = sys.modules.get("taskiq_fleet.results")  # the result backend's module
    if results is not None:
        monkeypatch.setattr(results, "ENDED_KEPT", KEPT)
    monkeypatch.setattr(broker_module, "_KEEP", KEPT, raising=False)  # its name before
    tasks = [await fleet_app.add.kiq(i, 1) for i in range(3 * KEPT)]
    assert [(await t.wait_result(timeout=30)).return_value for t in tasks] == [
        i + 1 for i in range(3 * KEPT)
    ]
    assert app_cluster.coordinator is not None
    app_cluster.coordinator.kill()  # nobody to ask now
    results = [await t.get_result() for t in tasks]
    assert [r.return_value for r in results] == [i + 1 for i in range(3 * KEPT)]


async def test_a_queued_run_survives_a_kill_of_the_coordinator(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A run waiting behind another is resumed by the restarted coordinator (from its live
    record, or from its submission message when it had none yet) and runs."""
    cluster.start_coordinator()
    cluster.start_agent("a1", "--cpus", "1", "--heartbeat", "0.2")
    client = await cluster.connect(workers=1)
    gate = tmp_path / "gate"
    wait = Node(id="w", task="async_wait_for_gate", kwargs={"gate": str(gate)})
    busy = await client.submit(Dag(nodes=(wait,)))
    await cluster.heartbeat(lambda b: len(b.running) == 1)
    add = Node(id="a", task="add", kwargs={"a": 1, "b": 2}, outputs=("s",))
    queued = await client.submit(Dag(nodes=(add,)))
    await cluster.checkpointed(busy.run_id)  # the running one is adopted after the restart
    assert cluster.coordinator is not None
    cluster.coordinator.kill()
    cluster.start_coordinator()
    gate.touch()
    assert (await busy.wait(timeout=40)).status == "succeeded"
    assert (await queued.result(timeout=40))["s"] == 3
