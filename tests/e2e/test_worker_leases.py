"""Worker leases with real processes: a busy agent is sent several attempts of one shape
at once and runs them one after another under one reservation, never two at a time."""

from __future__ import annotations

from pathlib import Path

from nats.aio.msg import Msg

from shared.wire.protocol import Accept, Heartbeat, decode_each
from taskiq_fleet import Dag, Node, ResourceRequest
from tests.e2e.cluster import Cluster

FAST = ("--heartbeat", "0.1")


async def one_cpu_agent(cluster: Cluster, depth: int, directory: Path, count: int) -> Dag:
    """A coordinator of pipeline ``depth``, one agent of one cpu, and ``count`` 1-cpu nodes
    that each fail if another runs beside them on the host."""
    cluster.start_coordinator("--pipeline-depth", str(depth))
    cluster.start_agent("w1", "--cpus", "1", *FAST)
    await cluster.connect(workers=1)
    alone = {"directory": str(directory)}
    one_cpu = ResourceRequest(cpu=1)
    return Dag(
        nodes=tuple(
            Node(id=f"t{i}", task="alone", kwargs=alone, request=one_cpu) for i in range(count)
        )
    )


async def test_a_one_cpu_agent_runs_queued_attempts_in_turn_under_one_reservation(
    cluster: Cluster, tmp_path: Path
) -> None:
    dag = await one_cpu_agent(cluster, 4, tmp_path, 40)
    assert cluster.client is not None
    handle = await cluster.client.submit(dag)

    def queued(beat: Heartbeat) -> bool:
        return bool(beat.queued)

    beat = await cluster.heartbeat(queued, within=30)  # several sent: leased
    assert beat.reserved.cpu <= 1
    assert len(beat.running) <= 1  # the others wait their turn
    view = await handle.wait(timeout=60)
    assert view.status == "succeeded", view.error  # none ran beside another
    assert all(b.reserved.cpu <= b.capacity.cpu for b in cluster.heartbeats)
    seen = max(b.seq for b in cluster.heartbeats)
    after = await cluster.heartbeat(lambda b: b.seq > seen and not b.running + b.queued)
    assert after.reserved.cpu == 0  # the lease's reservation went with its last attempt


async def test_without_pipelining_an_agent_holds_one_attempt_per_reservation(
    cluster: Cluster, tmp_path: Path
) -> None:
    dag = await one_cpu_agent(cluster, 1, tmp_path, 10)
    assert cluster.client is not None
    view = await (await cluster.client.submit(dag)).wait(timeout=60)
    assert view.status == "succeeded", view.error
    assert all(len(b.running) <= 1 and not b.queued for b in cluster.heartbeats)


async def test_a_queued_attempt_is_reported_running_only_if_it_still_runs_a_moment_later(
    cluster: Cluster,
) -> None:
    """Its outcome says it ran: a short one sends no accept of its own (one message fewer
    per attempt of a busy lease); a long one is shown running while it runs."""
    cluster.start_coordinator("--pipeline-depth", "4")
    cluster.start_agent("w1", "--cpus", "1", *FAST)
    client = await cluster.connect(workers=1)
    accepted: list[str] = []

    async def on_ack(msg: Msg) -> None:
        accepted.extend(a.ref.node_id for a in decode_each(msg.data, Accept))

    await client.nc.subscribe("fleet.ack.w1", cb=on_ack)
    one_cpu = ResourceRequest(cpu=1)
    quick = [Node(id=f"q{i}", task="add", args=(i, 1), request=one_cpu) for i in range(30)]
    slow = [
        Node(id=f"s{i}", task="sleep_for", kwargs={"seconds": 0.2}, request=one_cpu)
        for i in range(4)
    ]
    view = await (await client.submit(Dag(nodes=(*slow, *quick)))).wait(timeout=60)
    assert view.status == "succeeded", view.error
    await client.nc.flush()
    assert {f"s{i}" for i in range(4)} <= set(accepted)  # each ran long enough to be shown
    assert len([n for n in accepted if n.startswith("q")]) <= 20, accepted  # leased: fewer
