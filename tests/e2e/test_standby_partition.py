"""The leader cut off from the network while runs stream in (``tests/netns.py``): nats-server,
two coordinators, two agents and the client each on its own host. The leader's link is
pulled; the standby takes over; when the link is back the old leader finds it lost the
lease and steps down, and what it had queued to send is dropped by the agents (an older
term). Every run succeeds, no attempt runs twice, no agent refuses for capacity.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import netns
from tests.e2e.test_standby import Pair, check, stream
from tests.processes import FleetProcess, agent

SCENARIO_LIMIT = 120.0


@dataclass
class Lan:
    lan: netns.Lan
    pair: Pair
    hosts: dict[int, netns.Host]
    """Each coordinator's host, by its pid."""


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Lan]:
    roles = ("c1", "c2", "a1", "a2", "client")
    with netns.lan_with_nats(tmp_path, roles) as (lan, server, finalizers):
        records = tmp_path / "executions"
        records.mkdir()
        pair = Pair(server.url, tmp_path, records)
        hosts: dict[int, netns.Host] = {}
        procs: list[tuple[str, FleetProcess]] = []
        for n in (1, 2):
            args = ["coordinator", "--nats", server.url, "--log-format", "json"]
            procs.append((f"c{n}", FleetProcess(args, tmp_path / f"coordinator-{n}.log")))
        for name in ("a1", "a2"):
            procs.append((name, agent(server.url, name, tmp_path, "--cpus", "4")))
        for role, proc in procs:
            netns.inside(lan.hosts[role], proc)
            finalizers.callback(proc.stop, 5.0)
            proc.start()
            if role.startswith("c"):
                pair.coordinators.append(proc)
                hosts[proc.pid] = lan.hosts[role]
            else:
                pair.agents.append(proc)
        yield Lan(lan, pair, hosts)


def test_a_partitioned_leader_is_replaced_and_steps_down_when_it_is_back(lan: Lan) -> None:
    try:
        lan.lan.hosts["client"].run(lambda: _scenario(lan))
    except BaseException:
        print(lan.pair.logs_of(lan.pair.coordinators)[-20000:])
        raise


async def _scenario(lan: Lan) -> None:
    from taskiq_fleet import CoordinatorClient

    pair = lan.pair
    async with asyncio.timeout(SCENARIO_LIMIT):
        pair.client = await CoordinatorClient.connect(pair.url)
        try:
            await pair.client.wait_ready(2, within=60)
            leader = await pair.leader()
            host = lan.hosts[leader.pid]
            fault = asyncio.Event()
            streaming = asyncio.create_task(stream(pair, 1.5, fault))
            await fault.wait()
            host.link(up=False)
            cut_at = time.time()
            try:
                await pair.leader(not_pid=leader.pid)
                await asyncio.sleep(1.0)
            finally:
                host.link(up=True)
            handles = await streaming
            took = await check(pair, handles, cut_at)
            print(f"partition: first run submitted after the cut ended {took:.2f} s after it")
            async with asyncio.timeout(30):  # it learns at its next renewal
                while "no longer leading" not in leader.log():  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        finally:
            await pair.client.close()
