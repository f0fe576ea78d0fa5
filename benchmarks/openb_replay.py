"""Replay the Alibaba openb GPU trace and score placement quality as the FGD paper does.

Protocol (../shared/data/openb/README.md, Weng et al., USENIX ATC '23):

* cluster: ``openb_node_list_gpu_node.csv`` (1,213 nodes, 6,212 GPUs), or the
  list with CPU-only nodes too (``--all-nodes``);
* tasks: ``openb_pod_list_default.csv`` sorted by name, shuffled with
  ``random.Random(seed)``, then clones of tasks drawn with the same RNG from
  the (name-sorted) original list are appended until the requested GPU total
  reaches 130% of the cluster's GPU capacity;
* tasks only arrive, never leave; one that cannot be placed is dropped;
* metric: allocated GPU share / GPU capacity, read right after the task whose
  arrival brings the arrived GPU total (dropped tasks included) to 100% and
  to 130% of capacity.

GPU amounts are in milli-devices: a task with ``num_gpu`` 1 and ``gpu_milli``
below 1000 asks for that share of one device, any other GPU task for
``num_gpu`` whole devices.

    python -m benchmarks.openb_replay                # seeds 42-51, all policies
    python -m benchmarks.openb_replay --seeds 42     # quick run
"""

from __future__ import annotations

import argparse
import csv
import gc
import random
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks._common import add_policies_argument, environment, int_list, table, write_json
from shared.resources import MILLI, GPUDevice, ResourceRequest, WorkerSpec
from taskiq_fleet import Placement, ResourceAwareWorkerPool

DEFAULT_TRACE_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "openb"
GPU_NODES = "openb_node_list_gpu_node.csv"
ALL_NODES = "openb_node_list_all_node.csv"
PODS = "openb_pod_list_default.csv"
CHECKPOINTS = (100, 130)
"""Arrived GPU demand, in percent of capacity, at which allocation is read."""

PAPER: dict[str, tuple[float, float]] = {
    "Random": (86.3, 87.4),
    "Dot-product": (90.6, 90.8),
    "GPU-packing": (91.8, 92.1),
    "Best-fit": (92.9, 93.1),
    "FGD": (95.2, 95.4),
}
"""Published medians over seeds 42-51: GPU allocation % at 100% / 130% arrived."""


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int
    gpu_spec: str

    @property
    def gpu_demand(self) -> int:
        """Requested GPU in milli-devices: a share of one device, or whole devices."""
        if self.num_gpu == 1 and self.gpu_milli < MILLI:
            return self.gpu_milli
        return self.num_gpu * MILLI

    def request(self) -> ResourceRequest:
        gpus = self.gpu_demand / MILLI
        models = tuple(m for m in self.gpu_spec.split("|") if m) if gpus else ()
        return ResourceRequest(
            cpu=self.cpu_milli / MILLI, ram_mb=self.memory_mib, gpus=gpus, gpu_models=models
        )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def load_nodes(path: Path) -> list[WorkerSpec]:
    nodes = []
    for row in read_csv(path):
        count = int(row["gpu"] or 0)
        devices = tuple(GPUDevice(index=i, model=row["model"]) for i in range(count))
        nodes.append(
            WorkerSpec(
                name=row["sn"],
                cpu=int(row["cpu_milli"]) / MILLI,
                ram_mb=int(row["memory_mib"]),
                gpus=devices,
            )
        )
    return nodes


def load_tasks(path: Path) -> list[Task]:
    tasks = [
        Task(
            name=row["name"],
            cpu_milli=int(row["cpu_milli"]),
            memory_mib=int(row["memory_mib"]),
            num_gpu=int(row["num_gpu"] or 0),
            gpu_milli=int(row["gpu_milli"] or 0),
            gpu_spec=row.get("gpu_spec") or "",
        )
        for row in read_csv(path)
    ]
    return sorted(tasks, key=lambda t: t.name)


def arrival_order(tasks: Sequence[Task], capacity: int, seed: int) -> list[Task]:
    """Shuffled tasks, then random clones, up to 130% of capacity in requested GPU."""
    rng = random.Random(seed)
    target = capacity * CHECKPOINTS[-1] // 100
    order = list(tasks)
    rng.shuffle(order)
    stream: list[Task] = []
    arrived = 0
    for task in order:
        if arrived >= target:
            return stream
        stream.append(task)
        arrived += task.gpu_demand
    while arrived < target:
        clone = rng.choice(tasks)
        stream.append(clone)
        arrived += clone.gpu_demand
    return stream


@dataclass(slots=True)
class SeedResult:
    policy: str
    seed: int
    tasks: int
    clones: int
    alloc_pct: dict[int, float]
    failed: int
    failed_gpu_tasks: int
    wall_s: float
    us_per_decision: float
    build_s: float


@dataclass(slots=True)
class _Tally:
    arrived: int = 0
    allocated: int = 0
    failed: int = 0
    failed_gpu: int = 0
    place_ns: int = 0


def replay(
    pool: ResourceAwareWorkerPool, stream: Sequence[Task], capacity: int
) -> tuple[dict[int, float], _Tally, float]:
    """Place every task in order; allocation % at each checkpoint, the tally, wall seconds."""
    requests = [t.request() for t in stream]
    marks = [capacity * pct // 100 for pct in CHECKPOINTS]
    alloc: dict[int, float] = {}
    tally = _Tally()
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        start = clock()
        for task, request in zip(stream, requests, strict=True):
            t0 = clock()
            result = pool.place(request)
            tally.place_ns += clock() - t0
            tally.arrived += task.gpu_demand
            if type(result) is Placement:
                tally.allocated += task.gpu_demand
            else:
                tally.failed += 1
                tally.failed_gpu += task.gpu_demand > 0
            for pct, mark in zip(CHECKPOINTS, marks, strict=True):
                if pct not in alloc and tally.arrived >= mark:
                    alloc[pct] = 100 * tally.allocated / capacity
        wall_ns = clock() - start
    finally:
        gc.enable()
    check_accounting(pool, tally.allocated)
    return alloc, tally, wall_ns / 1e9


def check_accounting(pool: ResourceAwareWorkerPool, allocated: int) -> None:
    """The pool's own device accounting must agree with the replay's tally."""
    reserved = sum(
        round((1 - d.free) * MILLI) for name in pool.workers for d in pool.usage(name).devices
    )
    if reserved != allocated:
        raise AssertionError(f"pool reserves {reserved} milli-GPU, replay counted {allocated}")


def run_seed(
    nodes: Sequence[WorkerSpec], tasks: Sequence[Task], policy: str, seed: int, capacity: int
) -> SeedResult:
    stream = arrival_order(tasks, capacity, seed)
    t0 = time.perf_counter()
    pool = ResourceAwareWorkerPool(nodes, policy=policy)
    build_s = time.perf_counter() - t0
    alloc, tally, wall_s = replay(pool, stream, capacity)
    return SeedResult(
        policy=policy,
        seed=seed,
        tasks=len(stream),
        clones=max(0, len(stream) - len(tasks)),
        alloc_pct=alloc,
        failed=tally.failed,
        failed_gpu_tasks=tally.failed_gpu,
        wall_s=wall_s,
        us_per_decision=tally.place_ns / 1_000 / len(stream),
        build_s=build_s,
    )


@dataclass(slots=True)
class Summary:
    policy: str
    seeds: int
    alloc_median: dict[int, float]
    alloc_min: dict[int, float]
    alloc_max: dict[int, float]
    failed_median: float
    failed_gpu_median: float
    wall_s_median: float
    us_per_decision_median: float


def summarise(policy: str, results: Sequence[SeedResult]) -> Summary:
    def col(pct: int) -> list[float]:
        return [r.alloc_pct[pct] for r in results]

    return Summary(
        policy=policy,
        seeds=len(results),
        alloc_median={p: statistics.median(col(p)) for p in CHECKPOINTS},
        alloc_min={p: min(col(p)) for p in CHECKPOINTS},
        alloc_max={p: max(col(p)) for p in CHECKPOINTS},
        failed_median=statistics.median(r.failed for r in results),
        failed_gpu_median=statistics.median(r.failed_gpu_tasks for r in results),
        wall_s_median=statistics.median(r.wall_s for r in results),
        us_per_decision_median=statistics.median(r.us_per_decision for r in results),
    )


def _spread(s: Summary, pct: int) -> str:
    return f"{s.alloc_min[pct]:.1f}-{s.alloc_max[pct]:.1f}"


def render(summaries: Iterable[Summary]) -> str:
    headers = (
        "policy",
        "alloc@100%",
        "min-max",
        "alloc@130%",
        "min-max",
        "failed",
        "failed GPU",
        "replay s",
        "us/decision",
    )
    rows: list[tuple[object, ...]] = [
        (
            f"{s.policy} (ours)",
            f"{s.alloc_median[100]:.1f}",
            _spread(s, 100),
            f"{s.alloc_median[130]:.1f}",
            _spread(s, 130),
            f"{s.failed_median:g}",
            f"{s.failed_gpu_median:g}",
            f"{s.wall_s_median:.2f}",
            f"{s.us_per_decision_median:.1f}",
        )
        for s in summaries
    ]
    rows += [
        (f"{name} (paper)", f"{a:.1f}", "", f"{b:.1f}", "", "", "", "", "")
        for name, (a, b) in PAPER.items()
    ]
    return table(headers, rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.openb_replay",
        description="GPU allocation rate of each placement policy on the Alibaba openb trace, "
        "by the protocol of the FGD paper (USENIX ATC '23).",
    )
    parser.add_argument(
        "--trace-dir",
        type=Path,
        default=DEFAULT_TRACE_DIR,
        help="directory with the openb CSV files (default: ../shared/data/openb from the repo)",
    )
    parser.add_argument(
        "--all-nodes",
        action="store_true",
        help=f"use {ALL_NODES} (GPU plus CPU-only nodes) instead of {GPU_NODES}",
    )
    parser.add_argument(
        "--seeds",
        type=int_list,
        default=list(range(42, 52)),
        help="seeds, e.g. 42-51 or 42,43 (default: 42-51, as in the paper); medians are shown",
    )
    add_policies_argument(parser, "replay")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment()  # the code as imported, before anyone edits it mid-run
    trace_dir: Path = args.trace_dir.resolve()
    node_file = trace_dir / (ALL_NODES if args.all_nodes else GPU_NODES)
    missing = [p for p in (node_file, trace_dir / PODS) if not p.is_file()]
    if missing:
        print(
            f"openb trace not found: missing {', '.join(str(p) for p in missing)}\n"
            "Put the Alibaba cluster-trace-gpu-v2023 openb CSVs there or pass --trace-dir.",
            file=sys.stderr,
        )
        return 2
    nodes = load_nodes(node_file)
    tasks = load_tasks(trace_dir / PODS)
    capacity = sum(len(n.gpus) for n in nodes) * MILLI
    print(
        f"openb replay: {len(nodes):,} nodes ({node_file.name}), {capacity // MILLI:,} GPUs, "
        f"{len(tasks):,} tasks; seeds {args.seeds[0]}..{args.seeds[-1]} ({len(args.seeds)}); "
        "medians over seeds"
    )
    per_seed: list[SeedResult] = []
    summaries: list[Summary] = []
    for policy in args.policies:
        results = []
        for seed in args.seeds:
            r = run_seed(nodes, tasks, policy, seed, capacity)
            results.append(r)
            print(
                f"  {policy:<8} seed {seed}: {r.alloc_pct[100]:.1f}% / {r.alloc_pct[130]:.1f}% "
                f"({r.tasks:,} tasks, {r.failed:,} failed, {r.wall_s:.2f} s)",
                flush=True,
            )
        per_seed += results
        summaries.append(summarise(policy, results))
    print()
    print("GPU allocation % of capacity when arrived GPU demand reaches 100% / 130%")
    print(render(summaries))
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "openb_replay",
                "config": {
                    "trace_dir": str(trace_dir),
                    "node_file": node_file.name,
                    "seeds": args.seeds,
                    "policies": args.policies,
                    "nodes": len(nodes),
                    "gpus": capacity // MILLI,
                    "tasks": len(tasks),
                },
                "environment": env,
                "paper": {k: {"100": a, "130": b} for k, (a, b) in PAPER.items()},
                "summary": [asdict(s) for s in summaries],
                "per_seed": [asdict(r) for r in per_seed],
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
