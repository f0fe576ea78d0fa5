"""An attempt is reported running only if it still runs a moment after it started: a
quick task's outcome says it ran, so it costs no accept message (one of the fifteen
messages of a round trip); a long one is shown running while it runs."""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg

from shared.wire.protocol import Accept, decode_each
from taskiq_fleet import Dag, Node
from tests.e2e.cluster import Cluster


async def test_quick_tasks_send_no_accept_and_long_ones_do(cluster: Cluster) -> None:
    cluster.start_coordinator()
    cluster.start_agent("w1", "--heartbeat", "0.1")
    client = await cluster.connect(workers=1)
    accepted: list[str] = []

    async def on_ack(msg: Msg) -> None:
        accepted.extend(a.ref.node_id for a in decode_each(msg.data, Accept))

    await client.nc.subscribe("fleet.ack.w1", cb=on_ack)
    await client.nc.flush()
    quick = [Node(id=f"q{i}", task="add", args=(i, 1)) for i in range(20)]
    slow = [Node(id=f"s{i}", task="sleep_for", kwargs={"seconds": 0.3}) for i in range(2)]
    for dag in (Dag(nodes=tuple(quick)), Dag(nodes=tuple(slow))):
        view = await (await client.submit(dag)).wait(timeout=60)
        assert view.status == "succeeded", view.error
    await client.nc.flush()
    assert sorted(n for n in accepted if n.startswith("s")) == ["s0", "s1"], accepted
    assert not [n for n in accepted if n.startswith("q")], accepted


async def test_a_long_task_is_shown_running_while_it_runs(cluster: Cluster) -> None:
    cluster.start_coordinator()
    cluster.start_agent("w1", "--heartbeat", "0.1")
    client = await cluster.connect(workers=1)
    handle = await client.submit(
        Dag(nodes=(Node(id="s", task="sleep_for", kwargs={"seconds": 3.0}),)), progress=False
    )
    statuses: list[str] = []
    while not statuses or statuses[-1] not in ("running", "succeeded", "failed"):
        # No event says "now running" to a submitter; None until the submission is applied.
        view = await client.status(handle.run_id, missing_ok=True)
        if view is not None:
            statuses.append(view.nodes[0].status if view.nodes else view.status)
        await asyncio.sleep(0.05)
    assert statuses[-1] == "running", statuses
    view = await handle.wait(timeout=60)
    assert view.status == "succeeded", view.error
