"""A task is only sent to an agent that has it, even when the coordinator missed the
agents' Registers: real agent and coordinator processes on a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from shared.wire import protocol
from shared.wire.protocol import Register
from taskiq_fleet import Dag, Node
from tests.e2e.cluster import Cluster
from tests.processes import TASKS_APP, FleetProcess, agent
from tests.standin import StandIn

FLEET_APP = "tests.e2e.fleet_app:broker"
APPS = {"plain": TASKS_APP, "fleet": FLEET_APP}
TASKS = {"plain": "add", "fleet": "tests.e2e.fleet_app:add"}
RUNS_EACH = 6


@pytest.fixture
async def standin(nats_url: str) -> AsyncIterator[StandIn]:
    async with StandIn(nats_url) as s:
        yield s


@pytest.fixture
def start_agent(nats_url: str, tmp_path: Path) -> Iterator[Callable[..., FleetProcess]]:
    started: list[FleetProcess] = []

    def start(name: str) -> FleetProcess:
        proc = agent(nats_url, name, tmp_path, "--cpus", "2").start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


async def test_heartbeats_prove_the_task_set_and_a_request_brings_the_register_again(
    standin: StandIn, start_agent: Callable[..., FleetProcess]
) -> None:
    start_agent("w")
    first = await standin.registered("w")
    beat = await standin.heartbeat("w")
    assert beat.tasks_digest == protocol.task_digest(first.tasks)
    asking = protocol.encode(protocol.Reregister())
    await standin.client.publish(standin.subjects.reregister("w"), asking)
    again: Register = await standin.inboxes["register"].wait(lambda m: m is not first)
    assert (again.worker, again.tasks, again.started_at) == ("w", first.tasks, first.started_at)


def one(task: str) -> Dag:
    return Dag(nodes=(Node(id="sum", task=task, kwargs={"a": 1, "b": 2}, outputs=("s",)),))


def start_apps(cluster: Cluster) -> None:
    """One agent per application: different task sets."""
    for name, app in APPS.items():
        cluster.agents[name] = agent(cluster.url, name, cluster.log_dir, "--cpus", "2", app=app)
        cluster.agents[name].start()


async def runs_land_on_their_agents(cluster: Cluster, each: int) -> None:
    assert cluster.client is not None
    client = cluster.client
    handles = {
        name: [await client.submit(one(task)) for _ in range(each)] for name, task in TASKS.items()
    }
    for name, runs in handles.items():
        views = await asyncio.gather(*(h.wait(timeout=60) for h in runs))
        assert [(v.status, v.error) for v in views] == [("succeeded", "")] * each
        assert {v.node("sum").worker for v in views} == {name}
        assert all(v.outputs["s"] == 3 for v in views)


async def test_a_coordinator_started_after_its_agents_sends_each_task_to_its_agent_only(
    cluster: Cluster, standin: StandIn
) -> None:
    start_apps(cluster)
    for name in APPS:  # their Registers went out before any coordinator listened
        await standin.registered(name)
    cluster.start_coordinator()
    await cluster.connect(workers=2)
    await runs_land_on_their_agents(cluster, RUNS_EACH)
    assert "no task named" not in cluster.logs()


async def test_after_a_coordinator_restart_an_unknown_task_fails_as_infeasible_at_once(
    cluster: Cluster,
) -> None:
    cluster.start_coordinator()
    start_apps(cluster)
    client = await cluster.connect(workers=2)
    assert cluster.coordinator is not None
    cluster.coordinator.kill()
    cluster.start_coordinator()
    await client.wait_ready(2)
    handle = await client.submit(one("no_such_task"))
    view = await handle.wait(timeout=60)
    assert view.status == "failed"
    assert view.error == "infeasible: sum: no live worker has task 'no_such_task'"
    assert view.node("sum").attempt == 0, "never sent to an agent"
    await runs_land_on_their_agents(cluster, 1)
    assert "no task named" not in cluster.logs()
