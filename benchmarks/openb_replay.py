"""Replay the Alibaba openb GPU trace and score placement quality as the FGD paper does.

Protocol (../shared/data/openb/README.md, Weng et al., USENIX ATC '23):

* cluster: ``openb_node_list_gpu_node.csv`` (1,213 nodes, 6,212 GPUs), or the
  list with CPU-only nodes too (``--all-nodes``);
* tasks: ``openb_pod_list_default.csv`` sorted by name (or a workload derived
  from it, ``openb_trace.WORKLOADS``), shuffled with ``random.Random(seed)``,
  then clones of tasks drawn with the same RNG from the (name-sorted) list are
  appended until the requested GPU total reaches 130% of the cluster's GPU capacity;
* tasks only arrive, never leave; one that cannot be placed is dropped;
* metric: allocated GPU share / GPU capacity, read right after the task whose
  arrival brings the arrived GPU total (dropped tasks included) to 100% and
  to 130% of capacity; at 100% also the free GPU stranded on nodes with fewer
  than 4 free cores.

Each workload is placed by the pool's policies (``binpack`` is Best-fit,
``hybrid`` the default) and by an exhaustive FGD written beside it as the
reference (``fgd_reference.py``).

    python -m benchmarks.openb_replay                       # 5 workloads x seeds 42-51
    python -m benchmarks.openb_replay --seeds 42 --workloads default   # quick run
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from benchmarks._common import environment, int_list, policy_list, table, write_json
from benchmarks.fgd_reference import FGDReference
from benchmarks.openb_trace import (
    ALL_NODES,
    CHECKPOINTS,
    DEFAULT_TRACE_DIR,
    GPU_NODES,
    PODS,
    WORKLOADS,
    Task,
    arrival_order,
    load_nodes,
    load_tasks,
    workload,
)
from shared.resources import MILLI, ResourceRequest, WorkerSpec
from taskiq_fleet import Placement, ResourceAwareWorkerPool

PAPER: dict[str, tuple[float, float]] = {
    "Random": (86.3, 87.4),
    "Dot-product": (90.6, 90.8),
    "GPU-packing": (91.8, 92.1),
    "Best-fit": (92.9, 93.1),
    "FGD": (95.2, 95.4),
}
"""Published medians over seeds 42-51 on the default trace: GPU allocation % at 100% / 130%."""
REFERENCE = "fgd-ref"
LABELS = {
    "binpack": "Best-fit (binpack)",
    "hybrid": "ours (hybrid, default)",
    REFERENCE: "FGD reference",
}
STRANDED_CORES = 4


class Placer(Protocol):
    def place(self, task: Task) -> bool: ...

    def stranded(self, cores: int) -> int:
        """Free milli-GPU on nodes with fewer than ``cores`` free cores."""
        ...

    def allocated(self) -> int: ...


class PoolPlacer:
    """The pool under one policy; times every decision (requests are built beforehand,
    as the coordinator's catalog holds them)."""

    def __init__(self, nodes: Sequence[WorkerSpec], policy: str, stream: Sequence[Task]) -> None:
        self.pool = ResourceAwareWorkerPool(nodes, policy=policy)
        self.requests: dict[Task, ResourceRequest] = {}
        for task in stream:
            if task not in self.requests:
                self.requests[task] = request = task.request()
                _ = request.key
        self.times: list[int] = []

    def place(self, task: Task) -> bool:
        request = self.requests[task]
        t0 = time.perf_counter_ns()
        result = self.pool.place(request)
        self.times.append(time.perf_counter_ns() - t0)
        return type(result) is Placement

    def stranded(self, cores: int) -> int:
        names = self.pool.workers
        usages = (self.pool.usage(n) for n in names)
        return sum(round(u.gpus_free * MILLI) for u in usages if u.cpu_free < cores)

    def allocated(self) -> int:
        return sum(
            round((1 - d.free) * MILLI)
            for n in self.pool.workers
            for d in self.pool.usage(n).devices
        )


@dataclass(slots=True)
class SeedResult:
    workload: str
    policy: str
    seed: int
    tasks: int
    alloc_pct: dict[int, float]
    stranded_pct: float
    failed: int
    wall_s: float
    us_mean: float
    us_median: float


@dataclass(slots=True)
class Tally:
    alloc_pct: dict[int, float]
    stranded_pct: float
    allocated: int
    failed: int


def replay(placer: Placer, stream: Sequence[Task], capacity: int) -> Tally:
    """Place every task in order, reading allocation at each checkpoint and stranded GPU at 100%."""
    marks = [capacity * pct // 100 for pct in CHECKPOINTS]
    alloc: dict[int, float] = {}
    stranded = 0.0
    arrived = allocated = failed = 0
    for task in stream:
        if placer.place(task):
            allocated += task.gpu_demand
        else:
            failed += 1
        arrived += task.gpu_demand
        for pct, mark in zip(CHECKPOINTS, marks, strict=True):
            if pct not in alloc and arrived >= mark:
                alloc[pct] = 100 * allocated / capacity
                if pct == 100:
                    stranded = 100 * placer.stranded(STRANDED_CORES) / capacity
    return Tally(alloc, stranded, allocated, failed)


def run_seed(
    nodes: Sequence[WorkerSpec], tasks: Sequence[Task], name: str, policy: str, seed: int
) -> SeedResult:
    capacity = sum(len(n.gpus) for n in nodes) * MILLI
    stream = arrival_order(tasks, capacity, seed)
    placer: PoolPlacer | FGDReference
    if policy == REFERENCE:
        placer = FGDReference(nodes, tasks)
    else:
        placer = PoolPlacer(nodes, policy, stream)
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        tally = replay(placer, stream, capacity)
        wall = time.perf_counter() - t0
    finally:
        gc.enable()
    if placer.allocated() != tally.allocated:
        held = placer.allocated()
        raise AssertionError(
            f"{policy} holds {held} milli-GPU, the replay counted {tally.allocated}"
        )
    times = placer.times if isinstance(placer, PoolPlacer) else [0]
    return SeedResult(
        workload=name,
        policy=policy,
        seed=seed,
        tasks=len(stream),
        alloc_pct=tally.alloc_pct,
        stranded_pct=tally.stranded_pct,
        failed=tally.failed,
        wall_s=wall,
        us_mean=statistics.fmean(times) / 1_000,
        us_median=statistics.median(times) / 1_000,
    )


@dataclass(slots=True)
class Summary:
    workload: str
    policy: str
    seeds: int
    alloc_median: dict[int, float]
    alloc_min: dict[int, float]
    alloc_max: dict[int, float]
    stranded_median: float
    failed_median: float
    wall_s_median: float
    us_mean_median: float
    us_median_median: float


def summarise(results: Sequence[SeedResult]) -> Summary:
    def col(pct: int) -> list[float]:
        return [r.alloc_pct[pct] for r in results]

    return Summary(
        workload=results[0].workload,
        policy=results[0].policy,
        seeds=len(results),
        alloc_median={p: statistics.median(col(p)) for p in CHECKPOINTS},
        alloc_min={p: min(col(p)) for p in CHECKPOINTS},
        alloc_max={p: max(col(p)) for p in CHECKPOINTS},
        stranded_median=statistics.median(r.stranded_pct for r in results),
        failed_median=statistics.median(r.failed for r in results),
        wall_s_median=statistics.median(r.wall_s for r in results),
        us_mean_median=statistics.median(r.us_mean for r in results),
        us_median_median=statistics.median(r.us_median for r in results),
    )


HEADERS = (
    "workload",
    "placement",
    "alloc@100%",
    "alloc@130%",
    "min-max",
    "stranded@100%",
    "failed",
    "replay s",
    "us/decision mean",
    "p50",
)


def _row(s: Summary) -> tuple[object, ...]:
    timed = s.policy != REFERENCE
    return (
        s.workload,
        LABELS.get(s.policy, s.policy),
        f"{s.alloc_median[100]:.1f}",
        f"{s.alloc_median[130]:.2f}",
        f"{s.alloc_min[130]:.1f}-{s.alloc_max[130]:.1f}",
        f"{s.stranded_median:.1f}",
        f"{s.failed_median:g}",
        f"{s.wall_s_median:.1f}",
        f"{s.us_mean_median:.1f}" if timed else "",
        f"{s.us_median_median:.1f}" if timed else "",
    )


def render(summaries: Sequence[Summary]) -> str:
    rows = [_row(s) for s in summaries]
    if any(s.workload == "default" for s in summaries):
        rows += [
            ("default", f"{name} (paper)", f"{a:.1f}", f"{b:.1f}", "", "", "", "", "", "")
            for name, (a, b) in PAPER.items()
        ]
    return table(HEADERS, rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.openb_replay",
        description="GPU allocation rate of each placement policy on the Alibaba openb trace, "
        "by the protocol of the FGD paper (USENIX ATC '23), beside an exhaustive FGD.",
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
    parser.add_argument(
        "--workloads",
        type=_workload_list,
        default=list(WORKLOADS),
        help=f"workloads, comma-separated (default: {','.join(WORKLOADS)})",
    )
    parser.add_argument(
        "--policies",
        type=policy_list,
        default=["hybrid", "binpack"],
        help="pool policies to replay (default: hybrid,binpack)",
    )
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the exhaustive FGD (the slow part)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    return parser.parse_args(argv)


def _workload_list(text: str) -> list[str]:
    names = [w.strip() for w in text.split(",") if w.strip()]
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown workloads {unknown}; choose from {list(WORKLOADS)}"
        )
    return names


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
    base = load_tasks(trace_dir / PODS)
    placements = [*args.policies, *([] if args.no_reference else [REFERENCE])]
    print(
        f"openb replay: {len(nodes):,} nodes ({node_file.name}), "
        f"{sum(len(n.gpus) for n in nodes):,} GPUs; workloads {', '.join(args.workloads)}; "
        f"seeds {args.seeds[0]}..{args.seeds[-1]} ({len(args.seeds)}); medians over seeds"
    )
    per_seed: list[SeedResult] = []
    summaries: list[Summary] = []
    for name in args.workloads:
        tasks = workload(name, base, nodes)
        for policy in placements:
            results = [run_seed(nodes, tasks, name, policy, seed) for seed in args.seeds]
            for r in results:
                print(
                    f"  {name:<8} {policy:<8} seed {r.seed}: {r.alloc_pct[100]:.2f}% / "
                    f"{r.alloc_pct[130]:.2f}%, stranded {r.stranded_pct:.2f}% "
                    f"({r.tasks:,} tasks, {r.failed:,} failed, {r.wall_s:.1f} s)",
                    flush=True,
                )
            per_seed += results
            summaries.append(summarise(results))
    print()
    print(
        "GPU allocation % of capacity when arrived GPU demand reaches 100% / 130%; stranded: "
        f"free GPU on nodes with under {STRANDED_CORES} free cores at 100%, % of capacity"
    )
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
                    "workloads": args.workloads,
                    "placements": placements,
                    "nodes": len(nodes),
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
