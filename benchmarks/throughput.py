"""Throughput and latency through the coordinator, with reservations, to local agents.

Starts nats-server, a coordinator and ``--agents`` agents as separate processes on
this machine, then measures, per repeat: N no-op tasks submitted at once with
``kiq`` (tasks/s), one-at-a-time round trips (p50/p99), a chain of dependent nodes
(ms per hop) and a 1 -> N -> 1 fan-out (seconds). Medians over ``--repeats``.

    python -m benchmarks.throughput --tasks 5000 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from benchmarks import bench_tasks
from benchmarks._common import bench_fleet
from taskiq_fleet import CoordinatorClient, Dag, Node

APP = "benchmarks.bench_tasks:broker"


async def throughput(n: int) -> float:
    start = time.perf_counter()
    tasks = await asyncio.gather(*(bench_tasks.noop.kiq(i) for i in range(n)))
    results = await asyncio.gather(*(t.wait_result(timeout=300) for t in tasks))
    elapsed = time.perf_counter() - start
    assert all(r.return_value == i for i, r in enumerate(results))
    return n / elapsed


async def round_trips(n: int) -> list[float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        task = await bench_tasks.noop.kiq(i)
        result = await task.wait_result(timeout=30)
        times.append(time.perf_counter() - start)
        assert result.return_value == i
    return times


def chain(length: int) -> Dag:
    nodes = [Node(id="n0", task="noop", kwargs={"x": 0}, outputs=("o0",))]
    nodes += [
        Node(id=f"n{i}", task="noop", inputs={"x": f"o{i - 1}"}, outputs=(f"o{i}",))
        for i in range(1, length)
    ]
    return Dag(nodes=tuple(nodes))


def fan(width: int) -> Dag:
    middle = [
        Node(id=f"m{i}", task="noop", inputs={"x": "src"}, outputs=(f"m{i}",)) for i in range(width)
    ]
    return Dag(
        nodes=(
            Node(id="source", task="noop", kwargs={"x": 1}, outputs=("src",)),
            *middle,
            Node(id="sink", task="noop", kwargs={"x": 2}, after=tuple(m.id for m in middle)),
        )
    )


async def run_dag(client: CoordinatorClient, dag: Dag) -> float:
    start = time.perf_counter()
    view = await (await client.submit(dag, progress=False)).wait(timeout=300)
    elapsed = time.perf_counter() - start
    assert view.status == "succeeded", view.error
    return elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    bench_tasks.broker.nats = url
    await bench_tasks.broker.startup()
    client = bench_tasks.broker.connected()
    await client.wait_ready(args.agents)
    await throughput(200)  # warm-up
    rows = []
    for _ in range(args.repeats):
        row: dict[str, Any] = {"tasks_per_s": await throughput(args.tasks)}
        rt = await round_trips(args.round_trips)
        row["rt_p50_ms"] = statistics.median(rt) * 1000
        row["rt_p99_ms"] = pct(rt, 0.99) * 1000
        row["chain_ms_per_hop"] = await run_dag(client, chain(args.chain)) / args.chain * 1000
        row["fanout_s"] = await run_dag(client, fan(args.fan))
        rows.append(row)
        print("  " + "  ".join(f"{k}={v:.2f}" for k, v in row.items()), flush=True)
    await bench_tasks.broker.shutdown()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--chain", type=int, default=200)
    parser.add_argument("--fan", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with bench_fleet(args.agents, APP) as url:
        rows = asyncio.run(measure(url, args))
    print(f"\nmedians of {args.repeats} runs, {args.agents} agents, every process on this host")
    for key in rows[0]:
        print(f"  {key:18} {statistics.median(r[key] for r in rows):10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
