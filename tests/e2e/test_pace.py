"""A coordinator bounding the fleet's heartbeats a second paces its agents: they beat less
often, say so, and are not lost for beating as told (processes on a real nats-server)."""

from __future__ import annotations

import itertools
import time

from shared.wire.protocol import Heartbeat
from tests.e2e.cluster import Cluster

AGENTS = ("a1", "a2")
PACE = 2.0
"""Two agents and at most one heartbeat a second: two seconds apart (tests/processes.py
gives agents 0.2 s of their own, so three missed beats of their own are 0.6 s)."""


async def test_agents_beat_at_the_pace_the_coordinator_asks_and_stay(cluster: Cluster) -> None:
    cluster.start_coordinator("--max-heartbeats", "1")
    for name in AGENTS:
        cluster.start_agent(name)
    client = await cluster.connect(workers=len(AGENTS))
    arrivals: dict[str, dict[int, float]] = {name: {} for name in AGENTS}

    def paced(beat: Heartbeat) -> bool:
        if beat.interval == PACE:
            arrivals[beat.worker].setdefault(beat.seq, time.monotonic())
        return all(len(times) >= 3 for times in arrivals.values())

    await cluster.heartbeat(paced, within=30)
    for name, by_seq in arrivals.items():
        times = [by_seq[seq] for seq in sorted(by_seq)]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) > PACE / 2, (name, gaps)  # not their own 0.2 s
    assert sorted(w.spec.name for w in await client.workers()) == list(AGENTS)
    assert "worker lost" not in cluster.logs()
