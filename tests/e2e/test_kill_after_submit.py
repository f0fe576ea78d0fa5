"""Item 6: a coordinator killed within a second of a submission runs no node twice.

Killed that early, it has stored neither the runs nor acknowledged their submissions.
The agents go on, and their outcomes are stored in JetStream while no coordinator runs;
the restarted coordinator receives them before JetStream delivers the submissions again.
Each execution leaves a file named by its attempt (``record_execution``): no attempt of
any node may have run twice, and every run must succeed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from taskiq_fleet import Dag, Node, RunHandle
from tests.e2e.agent_tasks import executions
from tests.e2e.cluster import Cluster

ROUNDS = 6
RUNS_PER_ROUND = 4
FAST = ("--heartbeat", "0.2")


def chain(directory: Path) -> Dag:
    record = {"directory": str(directory)}
    return Dag(
        nodes=(
            Node(id="one", task="record_execution", kwargs=record),
            Node(id="two", task="record_execution", kwargs=record, after=("one",)),
            Node(id="three", task="record_execution", kwargs=record, after=("two",)),
        )
    )


async def first_execution(directory: Path, before: int, within: float = 20.0) -> None:
    """Until an execution of this round has left its file; another process writes it, so
    this polls every 5 ms."""
    async with asyncio.timeout(within):
        while len(list(directory.iterdir())) <= before:  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.005)


async def test_no_attempt_runs_twice_when_the_coordinator_dies_right_after_submissions(
    cluster: Cluster, tmp_path: Path
) -> None:
    records = tmp_path / "executions"
    records.mkdir()
    cluster.start_coordinator()
    cluster.start_agent("a1", "--cpus", "4", *FAST)
    cluster.start_agent("a2", "--cpus", "4", *FAST)
    client = await cluster.connect(workers=2)
    handles: list[RunHandle] = []
    for _ in range(ROUNDS):
        seen = len(list(records.iterdir()))
        for _ in range(RUNS_PER_ROUND):
            handles.append(await client.submit(chain(records)))
        await first_execution(records, seen)  # dispatched: no run of this round is stored
        assert cluster.coordinator is not None
        cluster.coordinator.kill()
        cluster.start_coordinator()
    views = await asyncio.gather(*(h.wait(timeout=90) for h in handles))
    assert [v.status for v in views] == ["succeeded"] * len(views), [v.error for v in views]
    ran = executions(records)
    twice = sorted(attempt for attempt, count in ran.items() if count > 1)
    nodes = Counter(name.rsplit(".", 1)[0] for name in ran.elements())
    rerun = sorted(node for node, count in nodes.items() if count > 1)
    print(f"{len(views)} runs, {sum(ran.values())} executions, nodes run again: {rerun}")
    assert twice == [], f"attempts executed more than once: {twice}"
    assert rerun == [], f"finished nodes run again: {rerun}"
