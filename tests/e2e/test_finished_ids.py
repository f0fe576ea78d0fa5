"""A run id that already finished is not run again, even by a coordinator restarted since."""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg

from shared.jetstream import MSG_ID
from shared.wire.protocol import decode_model, encode
from shared.wire.runs import RunUpdate, Submit
from shared.wire.subjects import Subjects
from taskiq_fleet import Dag, Node
from tests.e2e.cluster import Cluster

FAST = ("--heartbeat", "0.2")


async def test_a_finished_run_id_submitted_after_a_restart_gets_its_final_view(
    cluster: Cluster,
) -> None:
    cluster.start_coordinator()
    cluster.start_agent("a1", "--cpus", "2", "--ram-mb", "2048", *FAST)
    client = await cluster.connect(workers=1)
    first = Dag(nodes=(Node(id="sum", task="add", kwargs={"a": 1, "b": 2}, outputs=("y",)),))
    ended = await (await client.submit(first, run_id="once")).wait(timeout=30)
    assert ended.status == "succeeded", ended.error
    assert cluster.coordinator is not None
    assert cluster.coordinator.stop() == 0  # its final record is stored on the way out
    cluster.start_coordinator()
    await client.wait_ready(1)

    subjects = Subjects()
    pushed: asyncio.Future[RunUpdate] = asyncio.get_running_loop().create_future()

    async def on_update(msg: Msg) -> None:
        update = decode_model(msg.data, RunUpdate)
        if update.run is not None and not pushed.done():
            pushed.set_result(update)

    await client.nc.subscribe(subjects.run_updates("once"), cb=on_update)
    other = Dag(nodes=(Node(id="boom", task="fail", kwargs={"message": "ran twice"}),))
    again = Submit(run_id="once", dag=other)
    # A new message id, as a resubmission after JetStream's duplicate window would have.
    await client.nc.jetstream().publish(
        subjects.submit, encode(again), headers={MSG_ID: "once-again"}
    )
    update = await asyncio.wait_for(pushed, 30)

    stored = await client.status("once")
    assert update.run == stored  # the stored end, not a second run
    # The submitter heard the end from the agent (a one-node run): the same run, with the
    # submission time of the client's clock rather than the coordinator's.
    assert stored is not None
    assert (stored.status, stored.outputs, stored.nodes) == (
        ended.status,
        ended.outputs,
        ended.nodes,
    )
    assert "boom" not in cluster.logs()
