"""Chains with real processes: a node that waits for one other alone is sent ahead, under
that one's lease, and runs right after it on the same agent with its values; when the
step before does not succeed, what was chained to it runs only once it has (each
execution leaves a file: ``chain_step``)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from shared.wire.protocol import Heartbeat
from taskiq_fleet import Dag, Node, RetryPolicy, RunHandle
from tests.e2e.agent_tasks import executions
from tests.e2e.cluster import Cluster
from tests.natsserver import NatsEndpoint, NatsServer

FAST = ("--heartbeat", "0.2")


def step(node_id: str, records: Path, after: str | None = None, **kwargs: Any) -> Node:
    """A ``chain_step`` node whose ``x`` is the output of ``after``."""
    inputs = {} if after is None else {"x": after}
    return Node(
        id=node_id,
        task="chain_step",
        kwargs={"directory": str(records), **kwargs},
        inputs=inputs,
        outputs=(node_id,),
        retry=RetryPolicy(max_retries=kwargs.get("fail_attempts", 0)),
    )


def chain(records: Path, length: int, gate: Path, **first: Any) -> Dag:
    """``s0`` (behind ``gate``) -> ``s1`` -> ... each taking the value before it."""
    nodes = [step("s0", records, gate=str(gate), **first)]
    nodes += [step(f"s{i}", records, after=f"s{i - 1}") for i in range(1, length)]
    return Dag(nodes=tuple(nodes))


def ran(records: Path) -> Counter[str]:
    """Executions per node id (every attempt of it)."""
    found: Counter[str] = Counter()
    for attempt, count in executions(records).items():
        found[attempt.split(".")[1]] += count
    return found


def queued(count: int) -> Any:
    def check(beat: Heartbeat) -> bool:
        return len(beat.queued) >= count

    return check


async def one_agent(cluster: Cluster, tmp_path: Path, name: str = "a1") -> Path:
    records = tmp_path / "executions"
    records.mkdir(exist_ok=True)
    cluster.start_coordinator()
    cluster.start_agent(name, "--cpus", "1", *FAST)
    await cluster.connect(workers=1)
    return records


async def test_a_chain_is_sent_ahead_and_each_step_gets_the_value_before_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    records = await one_agent(cluster, tmp_path)
    gate = tmp_path / "gate"
    pair = step("pair", records, after="s2", outputs=2).model_copy(
        update={"outputs": ("left", "right")}
    )
    total = Node(
        id="total",
        task="chain_step",
        kwargs={"directory": str(records)},
        inputs={"x": ["left", "right", "extra"]},
        outputs=("total",),
    )
    dag = chain(records, 3, gate)
    dag = Dag(nodes=(*dag.nodes, pair, total), inputs=("extra",))
    assert cluster.client is not None
    handle = await cluster.client.submit(dag, inputs={"extra": 100})
    beat = await cluster.heartbeat(queued(3), within=30)  # sent while s0 waits
    assert len(beat.running) == 1
    assert ran(records) == Counter()
    gate.touch()
    outputs = await handle.result(timeout=30)
    # s0 = 1, s1 = 2, s2 = 3, pair = [4, 4], total = 4 + 4 + 100 + 1
    expected = {"s0": 1, "s1": 2, "s2": 3, "left": 4, "right": 4, "total": 109}
    assert outputs == {**expected, "extra": 100}
    assert ran(records) == Counter({"s0": 1, "s1": 1, "s2": 1, "pair": 1, "total": 1})


async def test_a_retried_step_runs_what_was_chained_to_it_once_after_it_succeeds(
    cluster: Cluster, tmp_path: Path
) -> None:
    records, handle = await sent_ahead(cluster, tmp_path, fail_attempts=1)
    (tmp_path / "gate").touch()
    outputs = await handle.result(timeout=30)
    assert outputs == {"s0": 1, "s1": 2, "s2": 3, "s3": 4}
    # s0 failed once and ran again; what was chained to its first attempt never ran then
    # (those attempts ended unrun), and each ran once after its second
    assert ran(records) == Counter({"s0": 2, "s1": 1, "s2": 1, "s3": 1})
    assert set(executions(records).values()) == {1}


async def test_a_step_that_fails_for_good_leaves_the_rest_of_its_chain_unrun(
    cluster: Cluster, tmp_path: Path
) -> None:
    records = await one_agent(cluster, tmp_path)
    gate = tmp_path / "gate"
    assert cluster.client is not None
    dag = chain(records, 3, gate)
    failing = dag.nodes[0].model_copy(update={"retry": RetryPolicy(), "task": "fail"})
    failing = failing.model_copy(update={"kwargs": {"message": "no"}})
    handle = await cluster.client.submit(Dag(nodes=(failing, *dag.nodes[1:])))
    view = await handle.wait(timeout=30)
    assert view.status == "failed"
    assert {n.id: n.status for n in view.nodes} == {
        "s0": "failed",
        "s1": "skipped",
        "s2": "skipped",
    }
    assert ran(records) == Counter()


async def sent_ahead(cluster: Cluster, tmp_path: Path, **first: Any) -> tuple[Path, RunHandle]:
    """One agent, and a chain of four sent to it while its first step waits for the file
    ``tmp_path / "gate"``: the executions' directory and the run."""
    records = await one_agent(cluster, tmp_path)
    assert cluster.client is not None
    handle = await cluster.client.submit(chain(records, 4, tmp_path / "gate", **first))
    await cluster.heartbeat(queued(3), within=30)
    return records, handle


async def test_a_chain_whose_agent_is_killed_finishes_on_another_each_step_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    records, handle = await sent_ahead(cluster, tmp_path)
    gate = tmp_path / "gate"
    cluster.start_agent("a2", "--cpus", "1", *FAST)
    await cluster.heartbeat(lambda beat: beat.worker == "a2")
    cluster.agents["a1"].kill()
    gate.touch()
    view = await handle.wait(timeout=60)
    assert view.status == "succeeded", view.error
    assert {n.worker for n in view.nodes} == {"a2"}
    assert ran(records) == Counter({"s0": 1, "s1": 1, "s2": 1, "s3": 1})


async def test_a_chain_goes_on_once_each_step_after_its_coordinator_is_killed(
    cluster: Cluster, tmp_path: Path
) -> None:
    records, handle = await sent_ahead(cluster, tmp_path)
    gate = tmp_path / "gate"
    await cluster.checkpointed(handle.run_id)
    assert cluster.coordinator is not None
    cluster.coordinator.kill()
    cluster.start_coordinator()
    gate.touch()
    view = await handle.wait(timeout=60)
    assert view.status == "succeeded", view.error
    assert view.outputs == {"s0": 1, "s1": 2, "s2": 3, "s3": 4}
    assert ran(records) == Counter({"s0": 1, "s1": 1, "s2": 1, "s3": 1})


async def test_a_large_value_goes_down_a_chain(cluster: Cluster, tmp_path: Path) -> None:
    await one_agent(cluster, tmp_path)
    size = 2_000_000  # over the inline limit: stored apart
    dag = Dag(
        nodes=(
            Node(id="make", task="big", kwargs={"size": size}, outputs=("text",)),
            Node(id="len", task="measure", inputs={"text": "text"}, outputs=("n",)),
        )
    )
    assert cluster.client is not None
    outputs = await (await cluster.client.submit(dag)).result(timeout=30)
    assert outputs["n"] == size


async def test_a_chain_sent_ahead_goes_on_once_each_step_across_a_nats_restart(
    cluster: Cluster, nats_server: NatsEndpoint, tmp_path: Path
) -> None:
    """NATS goes away while the chain waits on the agent: its outcomes wait in the agent's
    outbox and the direct answers with them, and every step runs once, with its value."""
    if not isinstance(nats_server, NatsServer):
        pytest.skip("needs the local nats-server (stop and start on the same port and store)")
    records, handle = await sent_ahead(cluster, tmp_path)
    await asyncio.to_thread(nats_server.stop)
    (tmp_path / "gate").touch()  # the steps run while NATS is away
    await asyncio.sleep(3.0)  # the outage itself: past the agent's 2 s publish timeout
    await asyncio.to_thread(nats_server.start)
    assert await handle.result(timeout=60) == {"s0": 1, "s1": 2, "s2": 3, "s3": 4}
    assert ran(records) == Counter({"s0": 1, "s1": 1, "s2": 1, "s3": 1})
