"""Sequential pipelines: one fleet run for the whole pipeline against one run per step.

A ``Pipeline(broker).call_next(noop)...`` of ``--steps`` no-op steps, known at ``kiq``,
runs as one DAG that the coordinator drives. The same pipeline with
``on_error("continue")`` is driven step by step from this process, one run per step (the
only way before). Per repeat: the median time of ``--sequential`` pipelines run one
after another, and pipelines/s for ``--concurrent`` started at once. Medians over
``--repeats``; every process on this host.

    python -m benchmarks.pipelines --steps 10 --repeats 5
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
from taskiq_fleet import Pipeline

APP = "benchmarks.bench_tasks:broker"
MODES = {"one run": False, "one run per step": True}


def pipeline(steps: int, per_step: bool) -> Pipeline:
    built = Pipeline(bench_tasks.broker)
    for _ in range(steps):
        built.call_next(bench_tasks.noop)
    return built.on_error("continue") if per_step else built


async def one(steps: int, per_step: bool) -> float:
    start = time.perf_counter()
    task = await pipeline(steps, per_step).kiq(1)
    result = await task.wait_result(timeout=120)
    assert result.return_value == 1, result
    return time.perf_counter() - start


async def concurrent(n: int, steps: int, per_step: bool) -> float:
    start = time.perf_counter()
    tasks = await asyncio.gather(*(pipeline(steps, per_step).kiq(i) for i in range(n)))
    results = await asyncio.gather(*(t.wait_result(timeout=300) for t in tasks))
    assert [r.return_value for r in results] == list(range(n))
    return n / (time.perf_counter() - start)


async def measure(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    bench_tasks.broker.nats = url
    await bench_tasks.broker.startup()
    await bench_tasks.broker.connected().wait_ready(args.agents)  # type: ignore[attr-defined]
    for per_step in MODES.values():
        await one(args.steps, per_step)  # warm-up
    rows = []
    for _ in range(args.repeats):
        row: dict[str, Any] = {}
        for mode, per_step in MODES.items():
            times = [await one(args.steps, per_step) for _ in range(args.sequential)]
            row[f"{mode}: ms per pipeline"] = statistics.median(times) * 1000
            row[f"{mode}: pipelines/s"] = await concurrent(args.concurrent, args.steps, per_step)
        rows.append(row)
        print("  " + "  ".join(f"{k}={v:.1f}" for k, v in row.items()), flush=True)
    await bench_tasks.broker.shutdown()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sequential", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with bench_fleet(args.agents, APP) as url:
        rows = asyncio.run(measure(url, args))
    print(f"\n{args.steps}-step pipelines, medians of {args.repeats} runs, {args.agents} agents")
    for key in rows[0]:
        print(f"  {key:32} {statistics.median(r[key] for r in rows):10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
