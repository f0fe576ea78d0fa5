"""Throughput and latency through the coordinator, with reservations, to local agents.

Starts nats-server, a coordinator and ``--agents`` agents as separate processes on
this machine, then measures, per repeat, the workloads of ``benchmarks._workload``:
N no-op tasks submitted at once with ``kiq`` (tasks/s), one-at-a-time round trips
(p50/p99), a chain of dependent nodes (ms per hop), a 1 -> N -> 1 fan-out (seconds),
and with ``--payload`` the round trips and fan-out again with a large argument and
result. Medians over ``--repeats``.

    python -m benchmarks.throughput --tasks 5000 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks import bench_tasks
from benchmarks._common import bench_fleet
from benchmarks._workload import Sizes, add_size_arguments, positive, report, rounds, sizes_from
from taskiq_fleet import CoordinatorClient, Dag, Node

APP = "benchmarks.bench_tasks:broker"


async def throughput(n: int) -> float:
    start = time.perf_counter()
    tasks = await asyncio.gather(*(bench_tasks.noop.kiq(i) for i in range(n)))
    results = await asyncio.gather(*(t.wait_result(timeout=300) for t in tasks))
    elapsed = time.perf_counter() - start
    assert all(r.return_value == i for i, r in enumerate(results))
    return n / elapsed


async def round_trips(n: int, value: Any) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        task = await bench_tasks.noop.kiq(value)
        result = await task.wait_result(timeout=60)
        times.append(time.perf_counter() - start)
        assert result.return_value == value, result.error
    return times


def chain(length: int) -> Dag:
    nodes = [Node(id="n0", task="noop", kwargs={"x": 0}, outputs=("o0",))]
    nodes += [
        Node(id=f"n{i}", task="noop", inputs={"x": f"o{i - 1}"}, outputs=(f"o{i}",))
        for i in range(1, length)
    ]
    return Dag(nodes=tuple(nodes))


def fan(width: int) -> Dag:
    """The source takes the run's input ``arg`` (a large one travels apart from the DAG, as
    a payload); the sink is ordered after the middle (``after``) and receives none of it."""
    middle = [
        Node(id=f"m{i}", task="noop", inputs={"x": "src"}, outputs=(f"m{i}",)) for i in range(width)
    ]
    return Dag(
        inputs=("arg",),
        nodes=(
            Node(id="source", task="noop", inputs={"x": "arg"}, outputs=("src",)),
            *middle,
            Node(id="sink", task="noop", kwargs={"x": 2}, after=tuple(m.id for m in middle)),
        ),
    )


async def run_dag(
    client: CoordinatorClient, dag: Dag, inputs: dict[str, Any] | None = None
) -> float:
    start = time.perf_counter()
    view = await (await client.submit(dag, inputs, progress=False)).wait(timeout=600)
    elapsed = time.perf_counter() - start
    assert view.status == "succeeded", view.error
    return elapsed


class FleetPeer:
    """The fleet as a blocking ``Peer``: every workload runs on one event loop of its own
    (the broker's connection lives there), so a sync driver can interleave it with Ray's."""

    name = "fleet"

    def __init__(self, runner: asyncio.Runner, client: CoordinatorClient) -> None:
        self._runner = runner
        self._client = client

    def throughput(self, n: int) -> float:
        return self._runner.run(throughput(n))

    def round_trips(self, n: int, value: Any) -> list[float]:
        return self._runner.run(round_trips(n, value))

    def chain(self, length: int) -> float:
        return self._runner.run(run_dag(self._client, chain(length)))

    def fan(self, width: int, value: Any) -> float:
        return self._runner.run(run_dag(self._client, fan(width), {"arg": value}))


async def _connect(url: str, agents: int) -> CoordinatorClient:
    bench_tasks.broker.nats = url
    await bench_tasks.broker.startup()
    client: CoordinatorClient = bench_tasks.broker.connected()  # type: ignore[assignment]
    await client.wait_ready(agents)
    return client


@contextmanager
def fleet_peer(agents: int, cpus: int = 64) -> Iterator[FleetPeer]:
    """nats-server, a coordinator and ``agents`` agents of ``cpus`` cores (processes), and
    the benchmark's broker connected to them; every task asks for 1 cpu (the default)."""
    with bench_fleet(agents, APP, cpus=cpus) as url, asyncio.Runner() as runner:
        peer = FleetPeer(runner, runner.run(_connect(url, agents)))
        try:
            yield peer
        finally:
            runner.run(bench_tasks.broker.shutdown())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_size_arguments(parser, Sizes(round_trips=300, payload=0))
    parser.add_argument("--agents", type=positive, default=2)
    parser.add_argument("--repeats", type=positive, default=3)
    args = parser.parse_args(argv)
    with fleet_peer(args.agents) as peer:
        rows = rounds(peer, sizes_from(args), args.repeats, sys.stdout)
    report(
        rows, f"medians of {args.repeats} runs, {args.agents} agents, every process on this host"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
