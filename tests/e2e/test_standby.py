"""Two coordinators, one leader: the leader is killed, paused past its lease, or cut off
while runs stream in, and the standby takes over.

Every execution leaves a file named by its attempt (``record_execution``), so a test can
tell that no attempt ran twice and no finished node ran again. Every run must succeed,
and no agent may refuse an assignment for capacity (a reservation made twice, by two
leaders, would show as one).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from coordinator.leadership import LeaderRecord
from coordinator.lease import LEASE_KEY
from shared.wire.subjects import Subjects
from taskiq_fleet import CoordinatorClient, Dag, Node, RunHandle
from tests.processes import FleetProcess, agent

FAST = ("--heartbeat-timeout", "5")
STREAM_FOR = 6.0
"""Seconds of runs submitted around the fault (one every 0.1 s)."""


def chain(directory: Path) -> Dag:
    record = {"directory": str(directory)}
    return Dag(
        nodes=(
            Node(id="one", task="record_execution", kwargs=record),
            Node(id="two", task="record_execution", kwargs=record, after=("one",)),
        )
    )


@dataclass
class Pair:
    url: str
    logs: Path
    records: Path
    coordinators: list[FleetProcess] = field(default_factory=list)
    agents: list[FleetProcess] = field(default_factory=list)
    client: CoordinatorClient | None = None

    def start_coordinator(self, n: int) -> FleetProcess:
        args = ["coordinator", "--nats", self.url, "--log-format", "json", *FAST]
        proc = FleetProcess(args, self.logs / f"coordinator-{n}.log").start()
        self.coordinators.append(proc)
        return proc

    async def leader(self, not_pid: int | None = None, within: float = 20.0) -> FleetProcess:
        """The coordinator the lease record names (other than ``not_pid``); asks every 50 ms."""
        assert self.client is not None
        kv = await self.client.nc.jetstream().key_value(Subjects().leader_bucket)
        async with asyncio.timeout(within):
            while True:
                entry = await kv.get(LEASE_KEY)
                record = LeaderRecord.model_validate_json(entry.value or b"{}")
                pid = int(record.name.rsplit(":", 1)[-1]) if record.holder else None
                for proc in self.coordinators:
                    if proc.pid == pid and pid != not_pid:
                        return proc
                await asyncio.sleep(0.05)

    def logs_of(self, procs: list[FleetProcess]) -> str:
        return "\n".join(p.log() for p in procs)


@pytest.fixture
async def pair(nats_url: str, tmp_path: Path) -> AsyncIterator[Pair]:
    records = tmp_path / "executions"
    records.mkdir()
    p = Pair(nats_url, tmp_path, records)
    try:
        p.start_coordinator(1)
        p.start_coordinator(2)
        for name in ("a1", "a2"):
            p.agents.append(agent(nats_url, name, tmp_path, "--cpus", "4").start())
        p.client = await CoordinatorClient.connect(nats_url)
        await p.client.wait_ready(2)
        yield p
    finally:
        if p.client is not None:
            await p.client.close()
        for proc in [*p.agents, *p.coordinators]:
            proc.signal(signal.SIGCONT)
            proc.stop()


async def stream(p: Pair, fault_at: float, fault: asyncio.Event) -> list[tuple[float, RunHandle]]:
    """Submit a run every 0.1 s for ``STREAM_FOR`` s; set ``fault`` at ``fault_at``."""
    assert p.client is not None
    handles: list[tuple[float, RunHandle]] = []
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < STREAM_FOR:
        if elapsed >= fault_at:
            fault.set()
        handles.append((time.time(), await p.client.submit(chain(p.records))))
        await asyncio.sleep(0.1)
    return handles


async def check(p: Pair, handles: list[tuple[float, RunHandle]], fault_time: float) -> float:
    """Every run succeeded, nothing ran twice, no capacity refusal; returns the seconds from
    the fault to the end of the first run submitted after it."""
    views = await asyncio.gather(*(h.wait(timeout=120) for _, h in handles))
    assert [v.status for v in views] == ["succeeded"] * len(views), [v.error for v in views]
    ran = Counter(path.name.rsplit(".", 1)[0] for path in p.records.iterdir())
    twice = sorted(attempt for attempt, count in ran.items() if count > 1)
    assert twice == [], f"attempts executed more than once: {twice}"
    nodes = Counter(name.rsplit(".", 1)[0] for name in ran.elements())
    rerun = sorted(node for node, count in nodes.items() if count > 1)
    assert rerun == [], f"finished nodes run again: {rerun}"
    assert "rejected" not in p.logs_of(p.agents)
    after = [(at, v) for (at, _), v in zip(handles, views, strict=True) if at > fault_time]
    assert after, "no run was submitted after the fault"
    first = min(after, key=lambda item: item[0])[1]
    assert first.finished_at is not None
    return first.finished_at - fault_time


async def test_fleet_workers_names_the_leader_and_the_standby(pair: Pair) -> None:
    assert pair.client is not None
    leader = await pair.leader()
    standby = next(p for p in pair.coordinators if p.pid != leader.pid)
    async with asyncio.timeout(20):
        while len(views := await pair.client.coordinators()) < 2:  # noqa: ASYNC110 (1 s presence)
            await asyncio.sleep(0.1)
    named = {v.name.rsplit(":", 1)[1]: v for v in views}
    assert (named[str(leader.pid)].role, named[str(standby.pid)].role) == ("leader", "standby")
    assert named[str(leader.pid)].term >= 1
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskiq_fleet", "workers", "--nats", pair.url,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 0
    shown = out.decode()
    line = shown.splitlines()[0]
    assert line.startswith("coordinators: ")
    assert f":{leader.pid} (leader, term" in line
    assert f":{standby.pid} (standby)" in line


async def test_a_standby_takes_over_from_a_killed_leader(pair: Pair) -> None:
    leader = await pair.leader()
    fault = asyncio.Event()
    streaming = asyncio.create_task(stream(pair, 2.0, fault))
    await fault.wait()
    leader.kill()
    killed = time.time()
    handles = await streaming
    took = await check(pair, handles, killed)
    print(f"first run submitted after the kill ended {took:.2f} s after it")
    assert (await pair.leader(not_pid=leader.pid)).pid != leader.pid


async def test_a_paused_leader_is_replaced_and_steps_down_without_writing(pair: Pair) -> None:
    leader = await pair.leader()
    fault = asyncio.Event()
    streaming = asyncio.create_task(stream(pair, 1.5, fault))
    await fault.wait()
    leader.signal(signal.SIGSTOP)
    stopped = time.time()
    successor = await pair.leader(not_pid=leader.pid)
    await asyncio.sleep(1.0)  # runs keep flowing through the successor meanwhile
    leader.signal(signal.SIGCONT)
    handles = await streaming
    took = await check(pair, handles, stopped)
    print(f"first run submitted after the pause ended {took:.2f} s after it")
    assert (await pair.leader()).pid == successor.pid
    log = leader.log()
    assert "no longer leading" in log
    resumed = log[log.index("no longer leading") :]
    assert "run finished" not in resumed
