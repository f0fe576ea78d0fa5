"""A backlog larger than what NATS buffers for one connection does not cut the coordinator
off (processes, a real nats-server whose per-connection buffer is made small).

A coordinator that falls behind (paused here; in a million-task run, busy) used to be sent
the stream's whole backlog at once: past the server's ``max_pending`` unread, the server
closed its connection as a slow consumer, and again after each reconnect.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.dag import Dag, Node
from tests.e2e.cluster import Cluster
from tests.natsserver import NatsServer

MAX_PENDING = 48 << 20
"""Above JetStream's flow control window (32 MB) and below the 64 MB default, so that a
smaller backlog overflows it."""
RUNS = 110
ARG = "x" * 900_000
"""Each run's submission is about 900 KB: 110 of them are ~100 MB, twice ``MAX_PENDING``
and more than the kernel's socket buffers hold besides."""


@pytest.fixture
async def small_buffers(tmp_path: Path) -> AsyncIterator[tuple[NatsServer, Cluster]]:
    conf = tmp_path / "nats.conf"
    conf.write_text(f"max_pending: {MAX_PENDING}\n")
    with NatsServer(tmp_path / "nats", extra_args=("-c", str(conf))) as server:
        cluster = Cluster(server.url, tmp_path)
        try:
            yield server, cluster
        finally:
            await cluster.close()


def events(log: str) -> list[str]:
    found = []
    for line in log.splitlines():
        try:
            found.append(json.loads(line).get("event", ""))
        except ValueError:
            continue
    return found


async def test_a_paused_coordinator_is_not_cut_off_by_the_backlog_it_missed(
    small_buffers: tuple[NatsServer, Cluster],
) -> None:
    server, cluster = small_buffers
    coordinator = cluster.start_coordinator("--infeasible-grace", "0")  # no agent: all fail
    client = await cluster.connect(workers=0)
    coordinator.signal(signal.SIGSTOP)
    try:
        dag = Dag(nodes=(Node(id="n", task="echo", kwargs={"value": ARG}),))
        handles = await asyncio.gather(*(client.submit(dag) for _ in range(RUNS)))
    finally:
        coordinator.signal(signal.SIGCONT)
    views = await asyncio.gather(*(handle.wait(timeout=120) for handle in handles))
    assert {(v.status, "infeasible" in v.error) for v in views} == {("failed", True)}
    log = server.log_path.read_text(errors="replace")
    assert "Slow Consumer" not in log
    assert "disconnected from NATS; no worker is judged lost until it is back" not in events(
        coordinator.log()
    )
