"""``--metrics-port``: the coordinator's and the agents' Prometheus pages during a real run.

A coordinator and two agents (separate processes, real nats-server), each with its page;
a DAG holds both agents' only core behind a gate file while a third node waits. The
pages are scraped before, while the gate is shut, and after: the figures move as the
work does (placements, the busy answer, reservations per dimension and per GPU device,
the queue, what each agent runs, task durations by task name and outcome).
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from taskiq_fleet import Dag, Node, ResourceRequest
from tests.e2e.cluster import Cluster
from tests.natsserver import free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
WITHIN = 30.0


def scrape_now(port: int) -> Samples:
    url = f"http://127.0.0.1:{port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


async def scrape(port: int) -> Samples:
    return await asyncio.to_thread(scrape_now, port)


async def until(port: int, pred: Callable[[Samples], bool], within: float = WITHIN) -> Samples:
    """Scrape until ``pred`` holds: a page announces nothing, so this asks every 50 ms."""
    async with asyncio.timeout(within):
        while not pred(found := await scrape(port)):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return found


def get(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= set(ls))


def gated(node_id: str, gate: Path, **request: float) -> Node:
    return Node(
        id=node_id,
        task="async_wait_for_gate",
        kwargs={"gate": str(gate)},
        request=ResourceRequest.model_validate({"cpu": 1, **request}),
    )


async def start(cluster: Cluster) -> dict[str, int]:
    ports = {"coordinator": free_port(), "a1": free_port(), "a2": free_port()}
    # No worker leases: the third node waits as busy instead of queueing on a worker.
    port = str(ports["coordinator"])
    cluster.start_coordinator("--metrics-port", port, "--pipeline-depth", "1")
    gpu = ("--gpus", "1xL4:24576")
    cluster.start_agent("a1", "--cpus", "1", *gpu, "--metrics-port", str(ports["a1"]))
    cluster.start_agent("a2", "--cpus", "1", "--metrics-port", str(ports["a2"]))
    await cluster.connect(workers=2)
    return ports


async def test_the_pages_move_with_the_work(cluster: Cluster, tmp_path: Path) -> None:
    ports = await start(cluster)
    assert cluster.client is not None
    coordinator, a1, a2 = ports["coordinator"], ports["a1"], ports["a2"]
    before = await scrape(coordinator)
    assert get(before, "fleet_workers", state="ready") == 2
    assert get(before, "fleet_capacity", worker="a1", dimension="cpu") == 1
    gate = tmp_path / "gate"
    dag = Dag(
        nodes=(
            gated("gpu", gate, gpus=0.5),
            gated("cpu", gate),
            gated("third", gate),
            Node(id="boom", task="fail", kwargs={"message": "no"}, after=("gpu",)),
        )
    )
    run = await cluster.client.submit(dag, on_error="continue")

    during = await until(coordinator, lambda s: get(s, "fleet_in_flight") == 2)
    during = await until(coordinator, lambda s: get(s, "fleet_waiting_nodes", why="busy") == 1)
    assert get(during, "fleet_queue_depth", priority="0") == 1
    assert total(during, "fleet_reserved", dimension="cpu") == 2
    assert get(during, "fleet_gpu_reserved_share", worker="a1", device="0", model="L4") == 0.5
    assert get(during, "fleet_placement_answers_total", kind="busy", reason="cpu") >= 1
    assert get(during, "fleet_nodes", status="ready") == 1
    agent1 = await until(a1, lambda s: get(s, "fleet_agent_running", worker="a1") == 1)
    assert get(agent1, "fleet_agent_reserved", worker="a1", dimension="cpu") == 1
    assert get(agent1, "fleet_agent_gpu_reserved_share", worker="a1", device="0", model="L4") == 0.5

    gate.touch()
    view = await run.wait(timeout=WITHIN)
    assert view.status == "failed", view
    after = await until(coordinator, lambda s: get(s, "fleet_in_flight") == 0)
    placed = get(after, "fleet_placements_total") - get(before, "fleet_placements_total")
    assert placed == 4
    assert total(after, "fleet_reserved", dimension="cpu") == 0
    assert get(after, "fleet_queue_depth", priority="0") == 0
    pages = [await scrape(a1), await scrape(a2)]
    name = "fleet_task_duration_seconds_count"
    assert sum(total(p, name, task="async_wait_for_gate", status="succeeded") for p in pages) == 3
    assert sum(total(p, name, task="fail", status="failed") for p in pages) == 1
    assert all(total(p, "fleet_agent_outbox_backlog") == 0 for p in pages)
    assert all(total(p, "fleet_agent_running") == 0 for p in pages)


async def test_pass_times_and_endings_are_counted(cluster: Cluster, tmp_path: Path) -> None:
    ports = await start(cluster)
    assert cluster.client is not None
    before = await scrape(ports["coordinator"])
    dag = Dag(nodes=(Node(id="ok", task="add", kwargs={"a": 1, "b": 2}),))
    assert (await (await cluster.client.submit(dag)).wait(timeout=WITHIN)).status == "succeeded"
    failing = Dag(nodes=(Node(id="boom", task="fail", kwargs={"message": "no"}),))
    assert (await (await cluster.client.submit(failing)).wait(timeout=WITHIN)).status == "failed"
    after = await until(
        ports["coordinator"],
        lambda s: get(s, "fleet_runs_finished_total", status="failed") == 1,
        within=10,
    )
    assert get(after, "fleet_runs_finished_total", status="succeeded") == 1
    assert get(after, "fleet_nodes_finished_total", status="failed") == 1
    passes = "fleet_scheduling_pass_seconds_count"
    assert get(after, passes) > get(before, passes)
