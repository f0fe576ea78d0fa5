"""A one-node run's agent answers its submitter itself: the result does not wait for the
outcome to be stored, applied by the coordinator and pushed (issue 15's direct path), and
the coordinator's durable record still follows."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import nats
from nats.aio.msg import Msg

from taskiq_fleet import Dag, Node
from tests.e2e.cluster import Cluster

FAST = ("--heartbeat", "0.2")


def gated(tmp_path: Path, value: int) -> tuple[Dag, Path]:
    gate = tmp_path / "gate"
    kwargs = {"gate": str(gate), "done": str(tmp_path / "done"), "value": value}
    node = Node(id="only", task="wait_for_gate", kwargs=kwargs, outputs=("result",))
    return Dag(nodes=(node,)), gate


async def test_a_one_node_run_ends_from_its_agent_while_the_coordinator_is_paused(
    cluster: Cluster, tmp_path: Path
) -> None:
    coordinator = cluster.start_coordinator()
    cluster.start_agent("w1", *FAST)
    client = await cluster.connect(workers=1)
    dag, gate = gated(tmp_path, 41)
    handle = await client.submit(dag)
    await cluster.heartbeat(lambda beat: any(r.run_id == handle.run_id for r in beat.running))
    coordinator.signal(signal.SIGSTOP)
    try:
        gate.touch()
        view = await handle.wait(timeout=20)
        assert view.status == "succeeded"
        assert view.node("only").worker == "w1"
        assert await handle.result() == {"result": 41}
    finally:
        coordinator.signal(signal.SIGCONT)
    stored = await (await client.follow(handle.run_id)).wait(timeout=20)
    assert stored.status == "succeeded"
    assert stored.outputs == {"result": 41}


async def test_a_run_of_two_nodes_waits_for_the_coordinator(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Only a node whose success ends its run is answered directly: here the run's end
    needs the second node, which only the coordinator can place."""
    coordinator = cluster.start_coordinator()
    cluster.start_agent("w1", *FAST)
    client = await cluster.connect(workers=1)
    dag, gate = gated(tmp_path, 1)
    after = Node(id="then", task="add", kwargs={"a": 1, "b": 2}, after=("only",))
    handle = await client.submit(Dag(nodes=(*dag.nodes, after)))
    await cluster.heartbeat(lambda beat: any(r.run_id == handle.run_id for r in beat.running))
    coordinator.signal(signal.SIGSTOP)
    try:
        gate.touch()
        await cluster.heartbeat(lambda beat: not beat.running)
        assert not handle.done
    finally:
        coordinator.signal(signal.SIGCONT)
    view = await handle.wait(timeout=20)
    assert view.status == "succeeded"
    assert view.node("then").status == "succeeded"


async def test_an_answered_end_is_not_pushed_to_the_submitter_again(cluster: Cluster) -> None:
    """The coordinator's record of a directly answered run goes to the run's subject (for
    followers elsewhere) but not to the submitter's inbox, which already has it; a run
    whose end needed the coordinator is pushed to both."""
    cluster.start_coordinator()
    cluster.start_agent("w1", *FAST)
    client = await cluster.connect(workers=1)
    seen: list[str] = []
    ended = asyncio.Event()
    spy = await nats.connect(cluster.url)

    async def heard(msg: Msg) -> None:  # one subscription: in the order they were sent
        if msg.subject.startswith("fleet.run."):
            ended.set()
        seen.append(msg.subject.split(".")[1])

    await spy.subscribe("fleet.*.*", cb=heard)
    try:
        one = Dag(nodes=(Node(id="one", task="add", kwargs={"a": 1, "b": 2}),))
        handle = await client.submit(one, progress=False)
        assert (await handle.wait(timeout=20)).status == "succeeded"
        await asyncio.wait_for(ended.wait(), 20)
        assert "client" not in seen, seen
        seen.clear()
        ended.clear()
        failing = Dag(nodes=(Node(id="one", task="fail", kwargs={"message": "no"}),))
        handle = await client.submit(failing, progress=False)
        assert (await handle.wait(timeout=20)).status == "failed"
        await asyncio.wait_for(ended.wait(), 20)
        assert seen[-2:] == ["client", "run"], seen
    finally:
        await spy.close()
