"""Several hosts on one machine: nats-server, the coordinator, two agents and the test's
client each in its own network namespace, on a private bridge (``tests/netns.py``).

Only the namespaces' own addresses are ever used: the hosts have no default route, and
the test's client runs inside a namespace too (``Host.run``). One agent's link is pulled
while it runs a node: the coordinator loses it after its heartbeat timeout, runs the node
again on the other agent, and when the link is back the agent rejoins and the outcome of
its superseded attempt changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from coordinator.service import DURABLE
from shared.wire.protocol import AttemptRef, Heartbeat, Outcome, decode_each
from shared.wire.subjects import Subjects
from taskiq_fleet import CoordinatorClient, Dag, LabelSelector, Node, ResourceRequest, RunView
from tests import netns
from tests.e2e.cluster import Cluster
from tests.processes import ROOT, FleetProcess, agent, coordinator

AGENTS = ("a1", "a2")
HEARTBEAT = 0.3
HEARTBEAT_TIMEOUT = 3  # intervals: a silent agent is lost after 0.9 s
WAIT = 20.0
SCENARIO_LIMIT = 60.0
SUBJECTS = Subjects()


@dataclass
class Fleet:
    lan: netns.Lan
    url: str
    cluster: Cluster
    tmp: Path

    def host(self, role: str) -> netns.Host:
        return self.lan.hosts[role]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """The LAN and every process on it. Teardown, whatever happened: stop each process by
    PID (agents, coordinator, nats-server), delete every namespace (their veths and the
    bridge go with them), and check that nothing of the LAN is left."""
    with netns.lan_with_nats(tmp_path, ("coord", *AGENTS, "client")) as (lan, server, finalizers):
        logs = tmp_path / "logs"
        logs.mkdir()
        cluster = Cluster(server.url, logs)
        timeout = ("--heartbeat-timeout", str(HEARTBEAT_TIMEOUT))
        procs = [("coord", coordinator(server.url, logs, *timeout))]
        for name in AGENTS:
            extra = ["--cpus", "2", "--ram-mb", "2048", "--labels", f"host={name}"]
            extra += ["--drain-timeout", "1"]
            procs.append((name, agent(server.url, name, logs, *extra, heartbeat=HEARTBEAT)))
        for role, proc in procs:
            netns.inside(lan.hosts[role], proc)
            finalizers.callback(proc.stop, 5.0)
            proc.start()
        cluster.coordinator = procs[0][1]
        cluster.agents = dict(procs[1:])
        yield Fleet(lan, server.url, cluster, tmp_path)


def test_work_of_a_partitioned_agent_moves_and_it_rejoins_without_duplicates(
    fleet: Fleet,
) -> None:
    try:
        fleet.host("client").run(lambda: _scenario(fleet))
    except BaseException:
        print(fleet.cluster.logs()[-20000:])
        raise


async def _scenario(fleet: Fleet) -> None:
    cluster = fleet.cluster
    try:
        async with asyncio.timeout(SCENARIO_LIMIT):
            client = await cluster.connect(workers=len(AGENTS))
            await _pipeline_uses_both_hosts(fleet, client)
            run_id, victim, before = await _partitioned_node_moves(fleet, client)
            await _partitioned_agent_rejoins(fleet, client, run_id, victim, before)
    finally:
        if cluster.client is not None:
            await cluster.client.close()


def req(**fields: object) -> ResourceRequest:
    return ResourceRequest.model_validate(fields)


async def _pipeline_uses_both_hosts(fleet: Fleet, client: CoordinatorClient) -> None:
    """A chain with a fan-out in the middle; each branch takes a whole agent, and both
    run at once (the gate opens only then), so work crossed to both hosts."""
    cluster = fleet.cluster
    gate = fleet.tmp / "gate-pipeline"
    gated = {"task": "async_wait_for_gate", "kwargs": {"gate": str(gate)}, "after": ("first",)}
    dag = Dag(
        nodes=(
            Node(id="first", task="add", kwargs={"a": 1, "b": 2}, outputs=("x",)),
            Node.model_validate({"id": "left", "request": {"cpu": 2}, **gated}),
            Node.model_validate({"id": "right", "request": {"cpu": 2}, **gated}),
            Node(
                id="middle",
                task="add",
                inputs={"a": "x"},
                kwargs={"b": 10},
                after=("left", "right"),
                outputs=("y",),
            ),
            Node(id="last", task="add", inputs={"a": "y"}, kwargs={"b": 100}, outputs=("z",)),
        )
    )
    handle = await client.submit(dag)
    for name in AGENTS:
        await cluster.heartbeat(_running_one(name), WAIT)
    gate.touch()
    view = await handle.wait(WAIT)
    assert view.status == "succeeded", view.error
    assert (view.outputs["x"], view.outputs["y"], view.outputs["z"]) == (3, 13, 113)
    assert {view.node("left").worker, view.node("right").worker} == set(AGENTS)
    assert all(n.status == "succeeded" and n.attempt == 1 for n in view.nodes), view.nodes


def runs(beat: Heartbeat, ref: AttemptRef) -> bool:
    """The beat lists this attempt of this node (in whichever coordinator lifetime)."""
    return ref.key in {r.key for r in beat.running}


def _running_one(worker: str) -> Callable[[Heartbeat], bool]:
    return lambda beat: beat.worker == worker and len(beat.running) == 1


async def _partitioned_node_moves(
    fleet: Fleet, client: CoordinatorClient
) -> tuple[str, str, RunView]:
    """Pull the link of the agent running the node: it runs again on the other agent."""
    cluster = fleet.cluster
    gate = fleet.tmp / "gate-partition"
    dag = Dag(nodes=(Node(id="slow", task="async_wait_for_gate", kwargs={"gate": str(gate)}),))
    handle = await client.submit(dag)
    first = AttemptRef(run_id=handle.run_id, node_id="slow", attempt=1)
    second = first.model_copy(update={"attempt": 2})
    beat = await cluster.heartbeat(lambda b: runs(b, first), WAIT)
    victim = beat.worker
    survivor = next(name for name in AGENTS if name != victim)

    fleet.host(victim).link(up=False)
    await cluster.heartbeat(lambda b: b.worker == survivor and runs(b, second), WAIT)
    assert cluster.coordinator is not None
    lost = {
        "event": "worker lost",
        "worker": victim,
        "reason": f"missed {HEARTBEAT_TIMEOUT} heartbeats",
    }
    await _logged(cluster.coordinator, lambda e: lost.items() <= e.items(), WAIT)
    gate.touch()  # both attempts end: the victim's only says so once its link is back

    view = await handle.wait(WAIT)
    assert view.status == "succeeded", view.error
    slow = view.node("slow")
    assert (slow.status, slow.worker, slow.attempt, slow.system_retries) == (
        "succeeded",
        survivor,
        2,
        1,
    )
    before = await client.status(handle.run_id)
    assert before is not None
    return handle.run_id, victim, before


async def _partitioned_agent_rejoins(
    fleet: Fleet, client: CoordinatorClient, run_id: str, victim: str, before: RunView
) -> None:
    """Link up: the agent is heard again and listed again, its late outcome of attempt 1
    is stored but changes nothing, and it takes new work."""
    cluster = fleet.cluster
    first = AttemptRef(run_id=run_id, node_id="slow", attempt=1)
    heard = max(b.seq for b in cluster.heartbeats if b.worker == victim)
    fleet.host(victim).link(up=True)
    await cluster.heartbeat(lambda b: b.worker == victim and b.seq > heard, WAIT)

    js = client.nc.jetstream()
    late = await _stored_outcome(js, first)
    await _coordinator_applied(js, late)
    after = await client.status(run_id)
    assert after == before, "the superseded attempt's outcome changed the run"
    counts = await _outcome_counts(js, run_id)
    assert counts == {("slow", 1): 1, ("slow", 2): 1}, counts

    await _until_listed(client, victim)
    workers = json.loads(await _fleet(fleet, "workers", "--json"))
    assert sorted(w["spec"]["name"] for w in workers) == sorted(AGENTS)
    assert all(w["healthy"] for w in workers), workers

    pinned = req(required=[LabelSelector.parse(f"host={victim}")])
    dag = Dag(nodes=(Node(id="back", task="add", kwargs={"a": 2, "b": 3}, request=pinned),))
    view = await (await client.submit(dag)).wait(WAIT)
    assert view.status == "succeeded", view.error
    assert (view.node("back").worker, view.node("back").attempt) == (victim, 1)


async def _stored_outcome(js: JetStreamContext, ref: AttemptRef) -> int:
    """The stream sequence of the first stored outcome of ``ref``; waits for it."""
    sub = await js.subscribe(SUBJECTS.all_outcomes, ordered_consumer=True)
    try:
        while True:
            msg = await sub.next_msg(timeout=WAIT)
            if any(o.ref.key == ref.key for o in decode_each(msg.data, Outcome)):
                seq: int = msg.metadata.sequence.stream
                return seq
    finally:
        await sub.unsubscribe()


async def _outcome_counts(js: JetStreamContext, run_id: str) -> dict[tuple[str, int], int]:
    """How many outcomes the stream holds per (node, attempt) of ``run_id``."""
    last = (await js.stream_info(SUBJECTS.outcomes_stream)).state.last_seq
    counts: dict[tuple[str, int], int] = {}
    sub = await js.subscribe(SUBJECTS.all_outcomes, ordered_consumer=True)
    try:
        seq = 0
        while seq < last:
            msg = await sub.next_msg(timeout=WAIT)
            seq = msg.metadata.sequence.stream
            for o in decode_each(msg.data, Outcome):
                if o.ref.run_id == run_id:
                    key = (o.ref.node_id, o.ref.attempt)
                    counts[key] = counts.get(key, 0) + 1
    finally:
        await sub.unsubscribe()
    return counts


async def _coordinator_applied(js: JetStreamContext, seq: int) -> None:
    """Until the coordinator acknowledged stream message ``seq``: it acks only after it
    applied it and stored the effect. Nothing announces an ack, so this asks every 20 ms."""
    while True:  # the leader's consumer is named by its term: "<DURABLE>-outcome-t<term>"
        for info in await js.consumers_info(SUBJECTS.outcomes_stream):
            ours = (info.name or "").startswith(f"{DURABLE}-outcome")
            if ours and info.ack_floor is not None and info.ack_floor.stream_seq >= seq:
                return
        await asyncio.sleep(0.02)


async def _until_listed(client: CoordinatorClient, worker: str) -> None:
    """Until the coordinator lists ``worker`` as healthy (it has applied the heartbeat the
    test saw; nothing announces that, so this asks every 50 ms)."""
    while True:
        if any(w.spec.name == worker and w.healthy for w in await client.workers()):
            return
        await asyncio.sleep(0.05)


async def _logged(
    proc: FleetProcess, pred: Callable[[dict[str, object]], bool], within: float
) -> None:
    """Until ``proc`` has written a JSON log line that satisfies ``pred``. Its log is a
    file another process writes, so this reads it every 20 ms."""
    async with asyncio.timeout(within):
        while True:
            for line in proc.log().splitlines(keepends=True):
                if line.startswith("{") and line.endswith("\n"):  # a whole line only
                    with contextlib.suppress(ValueError):
                        if pred(json.loads(line)):
                            return
            await asyncio.sleep(0.02)


async def _fleet(fleet: Fleet, *args: str) -> str:
    """``fleet ARGS --nats URL`` run inside the client's namespace; its stdout."""
    command = [sys.executable, "-m", "taskiq_fleet.cli", *args, "--nats", fleet.url]
    proc = await asyncio.create_subprocess_exec(
        *fleet.host("client").exec_args(*command),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()
