"""What a deep queue must not break: the results of many kiqs, and queued runs across a
coordinator's kill -9 (processes, a real nats-server)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js.errors import KeyNotFoundError, NoKeysError

import taskiq_fleet.broker as broker_module
from shared.dag import Dag, Node
from shared.resources import ResourceRequest
from shared.wire.subjects import Subjects
from taskiq_fleet import CoordinatorClient, RunHandle
from tests.e2e import fleet_app
from tests.e2e.agent_tasks import executions
from tests.e2e.cluster import Cluster, broker_cluster
from tests.natsserver import NatsEndpoint, NatsServer

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


async def one_busy_agent(
    cluster: Cluster, tmp_path: Path
) -> tuple[CoordinatorClient, Path, RunHandle]:
    """A coordinator, an agent of one cpu, and a run holding that cpu until the file
    ``gate`` exists: the client, the gate and the run."""
    cluster.start_coordinator()
    cluster.start_agent("a1", "--cpus", "1", "--heartbeat", "0.2")
    client = await cluster.connect(workers=1)
    gate = tmp_path / "gate"
    wait = Node(id="w", task="async_wait_for_gate", kwargs={"gate": str(gate)})
    busy = await client.submit(Dag(nodes=(wait,)))
    await cluster.heartbeat(lambda b: len(b.running) == 1)
    return client, gate, busy


async def test_a_queued_run_survives_a_kill_of_the_coordinator(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A run waiting behind another is resumed by the restarted coordinator (from its live
    record, or from its submission message when it had none yet) and runs."""
    client, gate, busy = await one_busy_agent(cluster, tmp_path)
    add = Node(id="a", task="add", kwargs={"a": 1, "b": 2}, outputs=("s",))
    queued = await client.submit(Dag(nodes=(add,)))
    await cluster.checkpointed(busy.run_id)  # the running one is adopted after the restart
    assert cluster.coordinator is not None
    cluster.coordinator.kill()
    cluster.start_coordinator()
    gate.touch()
    assert (await busy.wait(timeout=40)).status == "succeeded"
    assert (await queued.result(timeout=40))["s"] == 3


async def queued_records(cluster: Cluster) -> dict[str, list[str]]:
    """The run ids each queued record in KV names."""
    assert cluster.client is not None
    kv = await cluster.client.nc.jetstream().key_value("FLEET_RUNS")
    found = {}
    with contextlib.suppress(NoKeysError):
        for key in await kv.keys():
            if key.startswith("queued."):
                with contextlib.suppress(KeyNotFoundError):  # gone since listed
                    entry = await kv.get(key)
                    assert entry.value is not None
                    runs = json.loads(entry.value)["runs"]
                    found[key] = [r["submit"]["run_id"] for r in runs]
    return found


async def until_queued(cluster: Cluster, run_ids: set[str], within: float = 20.0) -> None:
    """Until queued records name all of these runs (nothing announces a write: every 20 ms)."""
    async with asyncio.timeout(within):
        while True:
            if run_ids <= {r for runs in (await queued_records(cluster)).values() for r in runs}:
                return
            await asyncio.sleep(0.02)


async def until_outcomes_acknowledged(cluster: Cluster, within: float = 20.0) -> None:
    """Until the coordinator acknowledged every outcome delivered to it: a restarted one
    then gets none of them again, so only the store can say those runs ended."""
    assert cluster.client is not None
    js = cluster.client.nc.jetstream()
    async with asyncio.timeout(within):
        while True:
            infos = await js.consumers_info(Subjects().outcomes_stream)
            if infos and all(
                i.num_ack_pending == 0
                and i.ack_floor is not None
                and i.ack_floor.stream_seq == (i.delivered.stream_seq if i.delivered else 0)
                for i in infos
            ):
                return
            await asyncio.sleep(0.02)


async def test_runs_resumed_from_a_queued_record_run_once_and_ended_ones_not_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Runs waiting as submitted share queued records, each kept until the last of its runs
    has a record of its own: killed while they still name three runs that ended and one
    still waiting, the restarted coordinator runs the waiting one once and the ended
    ones not again."""
    records = tmp_path / "executions"
    records.mkdir()
    cluster.start_coordinator()
    cluster.start_agent("a1", "--cpus", "1", "--heartbeat", "0.2")
    client = await cluster.connect(workers=1)
    first, second = tmp_path / "first", tmp_path / "second"

    def one(task: str, kwargs: dict[str, str], ram_mb: int = 0, priority: int = 0) -> Dag:
        """Another RAM ask is another lease shape: what waits cannot join a lease of what
        runs ahead of it; the higher priority runs first."""
        request = ResourceRequest(ram_mb=ram_mb)
        node = Node(id="n", task=task, kwargs=kwargs, request=request, priority=priority)
        return Dag(nodes=(node,))

    busy = await client.submit(one("async_wait_for_gate", {"gate": str(first)}))
    await cluster.heartbeat(lambda b: len(b.running) == 1)
    record = {"directory": str(records)}
    # submitted at once, so they come of age, and are written, together: three quick runs
    # first, then one that blocks the only cpu, and one that waits behind it
    *quick, blocker, last = await asyncio.gather(
        *(client.submit(one("record_execution", record, priority=2)) for _ in range(3)),
        client.submit(one("async_wait_for_gate", {"gate": str(second)}, 16, priority=1)),
        client.submit(one("record_execution", record, 8)),
    )
    await until_queued(cluster, {h.run_id for h in [*quick, blocker, last]})
    first.touch()
    assert (await busy.wait(timeout=30)).status == "succeeded"
    for handle in quick:
        assert (await handle.wait(timeout=30)).status == "succeeded"
    await cluster.heartbeat(lambda b: len(b.running) == 1)  # the blocker; the last waits
    assert last.run_id not in {attempt.split(".")[0] for attempt in executions(records)}
    await until_outcomes_acknowledged(cluster)
    names = {r for runs in (await queued_records(cluster)).values() for r in runs}
    assert {h.run_id for h in quick} | {last.run_id} <= names
    assert cluster.coordinator is not None
    cluster.coordinator.kill()
    cluster.start_coordinator()
    second.touch()
    assert (await blocker.wait(timeout=40)).status == "succeeded"
    assert (await last.wait(timeout=40)).status == "succeeded"
    ran: Counter[str] = Counter()
    for attempt, count in executions(records).items():
        ran[attempt.split(".")[0]] += count
    assert ran == Counter({h.run_id: 1 for h in [*quick, last]})
    async with asyncio.timeout(20):  # and the record goes once the last run ended
        while True:
            if not await queued_records(cluster):
                break
            await asyncio.sleep(0.02)


async def test_queued_runs_written_across_a_nats_restart_run_once_after_a_kill(
    cluster: Cluster, nats_server: NatsEndpoint, tmp_path: Path
) -> None:
    """NATS goes away within a second of the submissions, before their queued record is
    due: the record is written once NATS is back, survives in its file store, and a
    coordinator killed after that resumes each run from it exactly once."""
    if not isinstance(nats_server, NatsServer):
        pytest.skip("needs the local nats-server (stop and start on the same port and store)")
    records = tmp_path / "executions"
    records.mkdir()
    client, gate, busy = await one_busy_agent(cluster, tmp_path)
    record = Node(  # another RAM ask: not a member of the running one's lease
        id="n",
        task="record_execution",
        kwargs={"directory": str(records)},
        request=ResourceRequest(ram_mb=8),
    )
    waiting = await asyncio.gather(*(client.submit(Dag(nodes=(record,))) for _ in range(4)))
    await asyncio.to_thread(nats_server.stop)
    await asyncio.sleep(2.0)  # the outage itself: past the age at which the record is due
    await asyncio.to_thread(nats_server.start)
    await until_queued(cluster, {h.run_id for h in waiting}, within=40)
    assert cluster.coordinator is not None
    cluster.coordinator.kill()
    cluster.start_coordinator()
    gate.touch()
    for handle in [busy, *waiting]:
        view = await handle.wait(timeout=40)
        assert view.status == "succeeded", (view, cluster.logs()[-4000:])
    ran: Counter[str] = Counter()
    for attempt, count in executions(records).items():
        ran[attempt.split(".")[0]] += count
    assert ran == Counter({h.run_id: 1 for h in waiting})
