"""The whole system: a coordinator and agents as separate processes on a real nats-server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shared.jetstream import MSG_ID
from taskiq_fleet import Dag, LabelSelector, Node, ResourceRequest, RetryPolicy, RunView, WorkerSpec
from tests.e2e.cluster import Cluster

FAST = ("--heartbeat", "0.2")


def req(**fields: object) -> ResourceRequest:
    return ResourceRequest.model_validate(fields)


def fits(spec: WorkerSpec, request: ResourceRequest) -> bool:
    return (
        request.cpu <= spec.cpu
        and request.ram_mb <= spec.ram_mb
        and (request.gpus == 0 or len(spec.gpus) >= max(1, int(request.gpus)))
        and all(s.matches(spec.labels) for s in request.required)
    )


async def test_every_node_lands_on_a_worker_that_fits_and_no_agent_is_overcommitted(
    cluster: Cluster,
) -> None:
    cluster.start_coordinator()
    cluster.start_agent("small", "--cpus", "2", "--ram-mb", "2048", "--labels", "tier=small")
    cluster.start_agent("big", "--cpus", "8", "--ram-mb", "32768", "--labels", "tier=big")
    cluster.start_agent(
        "gpu", "--cpus", "4", "--ram-mb", "16384", "--gpus", "1xL4:24576", "--labels", "tier=gpu"
    )
    client = await cluster.connect(workers=3)
    specs = {w.spec.name: w.spec for w in await client.workers()}
    sleep = {"seconds": 0.3}
    nodes = [
        Node(id="embed", task="describe", kwargs={"text": "gpu"}, request=req(gpus=1, cpu=1)),
        Node(id="index", task="sleep_for", kwargs=sleep, request=req(cpu=2, ram_mb=20000)),
        Node(
            id="small_only",
            task="sleep_for",
            kwargs=sleep,
            request=req(cpu=1, required=[LabelSelector.parse("tier=small")]),
        ),
        *(
            Node(id=f"fan{i}", task="sleep_for", kwargs=sleep, request=req(cpu=2, ram_mb=1000))
            for i in range(8)
        ),
    ]
    join = Node(id="join", task="add", kwargs={"a": 1, "b": 2}, after=tuple(n.id for n in nodes))
    handle = await client.submit(Dag(nodes=(*nodes, join)))
    view = await handle.wait(timeout=60)
    assert view.status == "succeeded", view.error
    requests = {n.id: n.request for n in (*nodes, join)}
    for node in view.nodes:
        assert node.worker is not None
        assert fits(specs[node.worker], requests[node.id]), (node.id, node.worker)
    assert view.node("embed").worker == "gpu"
    assert view.node("embed").gpu_devices == (0,)
    assert view.node("index").worker == "big"
    assert view.node("small_only").worker == "small"
    assert cluster.heartbeats, "no heartbeats observed"
    for beat in cluster.heartbeats:
        assert beat.reserved.cpu <= beat.capacity.cpu
        assert beat.reserved.ram_mb <= beat.capacity.ram_mb
    assert max(b.reserved.cpu for b in cluster.heartbeats if b.worker == "big") > 2
    assert "assignment rejected" not in cluster.logs()


async def test_infeasible_fails_fast_and_busy_waits(cluster: Cluster) -> None:
    cluster.start_coordinator()
    cluster.start_agent("only", "--cpus", "2", "--ram-mb", "2048", *FAST)
    client = await cluster.connect(workers=1)
    impossible = Dag(
        nodes=(Node(id="huge", task="add", kwargs={"a": 1, "b": 1}, request=req(gpus=2)),)
    )
    view = await (await client.submit(impossible)).wait(timeout=20)
    assert view.status == "failed"
    assert "infeasible" in view.error
    assert "gpus" in view.error
    busy = Dag(
        nodes=tuple(
            Node(id=f"b{i}", task="sleep_for", kwargs={"seconds": 0.3}, request=req(cpu=2))
            for i in range(2)
        )
    )
    view = await (await client.submit(busy)).wait(timeout=20)
    assert view.status == "succeeded"
    first, second = sorted(view.nodes, key=lambda n: n.started_at or 0)
    assert first.finished_at is not None
    assert second.started_at is not None
    assert second.started_at >= first.finished_at - 0.05  # it waited for the cores


async def test_a_killed_agent_s_work_completes_elsewhere(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_coordinator()
    for name in ("a1", "a2"):
        cluster.start_agent(name, "--cpus", "2", "--ram-mb", "2048", *FAST)
    client = await cluster.connect(workers=2)
    gate = tmp_path / "gate"
    dag = Dag(nodes=(Node(id="slow", task="async_wait_for_gate", kwargs={"gate": str(gate)}),))
    handle = await client.submit(dag)
    running = asyncio.Event()
    handle.on_update(
        lambda u: running.set() if any(n.status == "running" for n in u.nodes) else None
    )
    if not any(n.status == "running" for n in handle.nodes.values()):
        await asyncio.wait_for(running.wait(), 20)
    victim = handle.nodes["slow"].worker
    assert victim in ("a1", "a2")
    cluster.agents[victim].kill()
    survivor = "a2" if victim == "a1" else "a1"
    await cluster.heartbeat(lambda b: b.worker == survivor and len(b.running) == 1)
    gate.touch()
    view = await handle.wait(timeout=30)
    node = view.node("slow")
    assert view.status == "succeeded"
    assert (node.worker, node.attempt, node.system_retries) == (survivor, 2, 1)


async def test_a_killed_coordinator_resumes_every_run_without_leaks(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_coordinator()
    cluster.start_agent("a1", "--cpus", "4", "--ram-mb", "4096", *FAST)
    client = await cluster.connect(workers=1)
    gate = tmp_path / "gate"
    dag = Dag(
        nodes=(
            Node(id="first", task="add", kwargs={"a": 1, "b": 2}, outputs=("x",)),
            Node(
                id="wait", task="async_wait_for_gate", kwargs={"gate": str(gate)}, after=("first",)
            ),
            Node(
                id="last",
                task="add",
                inputs={"a": "x"},
                kwargs={"b": 10},
                after=("wait",),
                outputs=("y",),
            ),
        )
    )
    handle = await client.submit(dag)
    await cluster.heartbeat(lambda b: len(b.running) == 1)
    await cluster.checkpointed(handle.run_id)  # else the restart starts it afresh
    assert cluster.coordinator is not None
    cluster.coordinator.kill()
    cluster.start_coordinator()
    gate.touch()
    view = await handle.wait(timeout=40)
    assert view.status == "succeeded", view.error
    assert view.outputs["y"] == 13
    assert view.node("wait").attempt == 1  # adopted, not run again
    # the run can end from the outcomes stored meanwhile before a1 registers again: its
    # steps were all on a1 already (chains)
    workers = await client.wait_ready(1)
    assert [(w.spec.name, w.reserved["cpu"], w.running) for w in workers] == [("a1", 0.0, 0)]
    await cluster.heartbeat(lambda b: b.reserved.cpu == 0 and not b.running)


async def test_malformed_input_gets_clear_errors_and_the_coordinator_keeps_serving(
    cluster: Cluster,
) -> None:
    cluster.start_coordinator()
    cluster.start_agent("a1", *FAST)
    client = await cluster.connect(workers=1)
    nc, js = client.nc, client.nc.jetstream()
    garbage = [b"", b"nonsense", b"{}", b'{"type": "submit"}', b'{"type": "heartbeat"}', b"[1]"]
    for i in range(200):
        data = garbage[i % len(garbage)]
        await nc.publish("fleet.agent.heartbeat.a1", data)
        await nc.publish("fleet.ack.a1", data)
        await nc.publish("fleet.agent.register.x", data)
    for data in garbage:
        await js.publish("fleet.submit", data)
    updates = await nc.subscribe("fleet.run.badrun")
    bad = b'{"type": "submit", "run_id": "badrun", "dag": {"nodes": []}}'
    await js.publish("fleet.submit", bad, headers={MSG_ID: "badrun", "Fleet-Run": "badrun"})
    refusal = await updates.next_msg(timeout=20)
    view = RunView.model_validate_json(refusal.data.decode().split('"run":', 1)[1][:-1])
    assert view.status == "failed"
    assert "submission refused" in view.error
    assert "nodes" in view.error
    reply = await nc.request("fleet.ctl.status", b"not json", timeout=5)
    assert b"not a JSON message" in reply.data
    with pytest.raises(ValueError, match="cycle"):
        Dag(nodes=(Node(id="a", task="add", after=("b",)), Node(id="b", task="add", after=("a",))))
    ok = Dag(nodes=(Node(id="n", task="add", kwargs={"a": 2, "b": 2}, outputs=("s",)),))
    assert (await (await client.submit(ok)).result(timeout=20))["s"] == 4
    assert "dropped a malformed message" in cluster.coordinator.log()  # type: ignore[union-attr]


async def test_application_errors_retry_then_fail_with_partial_results(cluster: Cluster) -> None:
    cluster.start_coordinator()
    cluster.start_agent("a1", *FAST)
    client = await cluster.connect(workers=1)
    dag = Dag(
        nodes=(
            Node(id="good", task="add", kwargs={"a": 1, "b": 1}, outputs=("g",)),
            Node(
                id="bad", task="fail", kwargs={"message": "boom"}, retry=RetryPolicy(max_retries=2)
            ),
            Node(id="after_bad", task="add", kwargs={"a": 1, "b": 1}, after=("bad",)),
        )
    )
    view = await (await client.submit(dag, on_error="continue")).wait(timeout=20)
    assert view.status == "failed"
    assert view.outputs["g"] == 2
    bad = view.node("bad")
    assert (bad.status, bad.attempt) == ("failed", 3)
    assert bad.error is not None
    assert bad.error.message == "boom"
    assert view.node("after_bad").status == "skipped"


async def test_a_run_the_coordinator_never_checkpointed_is_delivered_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_coordinator()
    cluster.start_agent("a1", *FAST)
    client = await cluster.connect(workers=1)
    gate = tmp_path / "gate"
    dag = Dag(
        nodes=(
            Node(id="wait", task="async_wait_for_gate", kwargs={"gate": str(gate)}),
            Node(id="after", task="add", kwargs={"a": 1, "b": 1}, after=("wait",), outputs=("s",)),
        )
    )
    handle = await client.submit(dag)
    await cluster.heartbeat(lambda b: len(b.running) == 1)
    assert cluster.coordinator is not None
    cluster.coordinator.kill()  # within the first second: no live record yet
    cluster.start_coordinator()
    gate.touch()
    view = await handle.wait(timeout=40)
    assert view.status == "succeeded", view.error
    assert view.outputs["s"] == 2
