"""No value can crash the coordinator: real processes, a real nats-server.

Before the depth bound, a kwargs value nested 200 lists deep was accepted and stored, and
then every coordinator start exited reading it back until the record was deleted by hand.
"""

from __future__ import annotations

from shared.jetstream import MSG_ID
from shared.wire.runs import Submit
from taskiq_fleet import Dag, Node, RunView
from tests.e2e.cluster import Cluster

FAST = ("--heartbeat", "0.2")
OK = Dag(nodes=(Node(id="n", task="add", kwargs={"a": 2, "b": 2}, outputs=("s",)),))


def deep_submission(run_id: str, depth: int) -> bytes:
    """What a client that skips our models can publish (text: too deep for json.dumps)."""
    dag = Dag(nodes=(Node(id="n", task="add", kwargs={"a": 0, "b": 1}),))
    data = Submit(run_id=run_id, dag=dag).model_dump_json().encode()
    return data.replace(b'"a":0', b'"a":' + b"[" * depth + b"1" + b"]" * depth)


async def test_a_deep_value_is_refused_and_every_restart_still_serves(cluster: Cluster) -> None:
    cluster.start_coordinator()
    cluster.start_agent("a1", *FAST)
    client = await cluster.connect(workers=1)
    nc, js = client.nc, client.nc.jetstream()
    for depth, run_id in ((65, "deep65"), (200, "deep200"), (252, "deep252")):
        updates = await nc.subscribe(f"fleet.run.{run_id}")
        headers = {MSG_ID: run_id, "Fleet-Run": run_id}
        await js.publish("fleet.submit", deep_submission(run_id, depth), headers=headers)
        pushed = (await updates.next_msg(timeout=20)).data.decode()
        view = RunView.model_validate_json(pushed.split('"run":', 1)[1][:-1])
        assert view.status == "failed"
        assert "submission refused" in view.error
        assert "nested more than 64 levels" in view.error or "recursion limit" in view.error
        await updates.unsubscribe()
    assert cluster.coordinator is not None
    for _ in range(2):
        cluster.coordinator.kill()
        cluster.start_coordinator()
        await client.wait_ready(1)
        assert (await (await client.submit(OK)).result(timeout=30))["s"] == 4
    assert cluster.coordinator.proc is not None
    assert cluster.coordinator.proc.poll() is None


async def test_a_start_sets_an_unreadable_record_aside_and_serves(cluster: Cluster) -> None:
    cluster.start_coordinator()
    cluster.start_agent("a1", *FAST)
    client = await cluster.connect(workers=1)
    assert cluster.coordinator is not None
    cluster.coordinator.kill()
    kv = await client.nc.jetstream().key_value("FLEET_RUNS")
    await kv.put("live.broken", b'{"submit": {"run_id": "broken"}, "view": ' + b"[" * 300)
    cluster.start_coordinator()
    await client.wait_ready(1)
    assert (await (await client.submit(OK)).result(timeout=30))["s"] == 4
    broken = await client.status("broken")
    assert broken is not None
    assert broken.status == "failed"
    assert "could not read this run's stored record" in broken.error
    assert "broken" in {v.run_id for v in await client.runs()}
    assert "set aside an unreadable run record" in cluster.coordinator.log()
