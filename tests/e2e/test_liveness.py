"""A paused coordinator, or one cut off from NATS, loses no worker: loss is judged only on
silence it was awake to hear (coordinator and agents as processes on a real nats-server).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import pytest

from shared.wire.protocol import Heartbeat
from taskiq_fleet import Dag, FleetError, Node, RunView
from tests.e2e.cluster import Cluster
from tests.natsserver import NatsEndpoint, NatsServer

AGENTS = ("a1", "a2")
HEARTBEAT = 0.2
"""The agents' interval (tests/processes.py): three missed beats are 0.6 s."""
PAUSED_BEATS = 10
"""Each agent beats this often while the coordinator is stopped: 2 s, over three times
the 0.6 s after which a silent worker is lost."""


def sleeper(seconds: float) -> Dag:
    return Dag(nodes=(Node(id="sleep", task="sleep_for", kwargs={"seconds": seconds}),))


async def beats_after(cluster: Cluster, seqs: dict[str, int], more: int) -> None:
    """Until every agent has sent ``more`` heartbeats after ``seqs`` (the observer is the
    test's own connection, which is not paused)."""
    for name, seq in seqs.items():

        def later(beat: Heartbeat, name: str = name, seq: int = seq) -> bool:
            return beat.worker == name and beat.seq >= seq + more

        await cluster.heartbeat(later)


def last_seqs(cluster: Cluster) -> dict[str, int]:
    seqs = dict.fromkeys(AGENTS, 0)
    for beat in cluster.heartbeats:
        seqs[beat.worker] = max(seqs.get(beat.worker, 0), beat.seq)
    return seqs


async def start(cluster: Cluster) -> None:
    cluster.start_coordinator()
    for name in AGENTS:
        cluster.start_agent(name, "--cpus", "4")
    await cluster.connect(workers=len(AGENTS))
    await beats_after(cluster, last_seqs(cluster), 1)


async def ended(cluster: Cluster, run_id: str, within: float = 60.0) -> RunView:
    """The run once ended, asked of the coordinator every 100 ms: a push sent while this
    client was still reconnecting is not sent again."""
    assert cluster.client is not None
    view: RunView | None = None
    async with asyncio.timeout(within):
        while True:
            with contextlib.suppress(FleetError):  # the coordinator is still reconnecting
                view = await cluster.client.status(run_id, missing_ok=True)
            if view is not None and view.done:
                return view
            await asyncio.sleep(0.1)


def check(cluster: Cluster, views: list[RunView]) -> None:
    failed = [(v.run_id, v.status, v.error) for v in views if v.status != "succeeded"]
    assert failed == [], f"{len(failed)} of {len(views)} runs failed; coordinator log:\n" + (
        "" if cluster.coordinator is None else cluster.coordinator.log()[-6000:]
    )
    retried = [(v.run_id, n.id, n.reason) for v in views for n in v.nodes if n.system_retries]
    assert retried == [], f"nodes retried as system failures: {retried}"
    assert '"worker lost"' not in cluster.logs(), cluster.logs()[-6000:]


async def test_a_stopped_coordinator_loses_no_worker_and_fails_no_run(cluster: Cluster) -> None:
    await start(cluster)
    client = cluster.client
    assert client is not None
    assert cluster.coordinator is not None
    before = [await client.submit(sleeper(0.5)) for _ in range(10)]
    await before[0].wait(timeout=30)  # the coordinator has placed and seen work end
    in_flight = [await client.submit(sleeper(1.0)) for _ in range(6)]
    seqs = last_seqs(cluster)
    cluster.coordinator.signal(signal.SIGSTOP)
    try:
        paused = [await client.submit(sleeper(0.2)) for _ in range(10)]
        await beats_after(cluster, seqs, PAUSED_BEATS)
    finally:
        cluster.coordinator.signal(signal.SIGCONT)
    handles = before + in_flight + paused
    views = [await h.wait(timeout=60) for h in handles]
    check(cluster, views)
    assert {w.spec.name for w in await client.workers()} == set(AGENTS)


async def test_runs_in_flight_across_a_nats_restart_all_succeed(
    cluster: Cluster, nats_server: NatsEndpoint
) -> None:
    if not isinstance(nats_server, NatsServer):
        pytest.skip("needs the local nats-server (stop and start on the same port and store)")
    await start(cluster)
    client = cluster.client
    assert client is not None
    handles = [await client.submit(sleeper(1.5)) for _ in range(8)]
    handles += [await client.submit(sleeper(0.1)) for _ in range(8)]
    await cluster.heartbeat(lambda b: len(b.running) > 0)  # work is on the agents
    await asyncio.to_thread(nats_server.stop)
    await asyncio.sleep(2.0)  # the outage itself: over three heartbeat intervals
    await asyncio.to_thread(nats_server.start)
    handles += [await client.submit(sleeper(0.1)) for _ in range(4)]
    views = [await ended(cluster, h.run_id) for h in handles]
    check(cluster, views)
    assert {w.spec.name for w in await client.workers()} == set(AGENTS)
