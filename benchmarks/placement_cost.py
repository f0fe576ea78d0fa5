"""Placement cost: microseconds per decision of ResourceAwareWorkerPool at fleet scale.

A seeded synthetic fleet of heterogeneous workers (eight machine shapes, three
zones, two tiers, a unique hostname each) is pre-loaded with random requests
until about ``--load`` of its CPU is reserved. Then ``--ops`` operations are
timed, each a ``place`` followed by a ``release`` of what it placed, so the
pool stays in the same steady state. Two passes per repeat:

* place+release: ``perf_counter_ns`` around batches of ``--batch`` operations;
* place alone: ``perf_counter_ns`` around every ``place`` call, as mean and median
  (includes roughly 0.1 us of timer overhead per call).

Medians over ``--repeats`` are printed per fleet size and policy.

    python -m benchmarks.placement_cost
    python -m benchmarks.placement_cost --workers 100,1000 --ops 5000 --json out.json
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import add_policies_argument, environment, int_list, table, write_json
from taskiq_fleet import (
    GPUDevice,
    LabelSelector,
    Placement,
    PreferredLabel,
    ResourceAwareWorkerPool,
    ResourceRequest,
    WorkerSpec,
)

ZONES = ("zone-a", "zone-b", "zone-c")


def zones(n: int) -> tuple[str, ...]:
    """``n`` zone names, the first three those the request selectors name."""
    return (*ZONES, *(f"zone-{i}" for i in range(3, n)))[:n]


TIERS = ("standard", "spot")
TIER_WEIGHTS = (0.7, 0.3)


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    weight: float
    cpu: float
    ram_mb: int
    gpu_model: str = ""
    gpu_count: int = 0
    gpu_mem_mb: int = 0


SHAPES: tuple[Shape, ...] = (
    Shape("cpu-2c-4g", 0.22, 2, 4_096),
    Shape("cpu-4c-16g", 0.22, 4, 16_384),
    Shape("cpu-16c-64g", 0.15, 16, 65_536),
    Shape("bigmem-32c-512g", 0.06, 32, 524_288),
    Shape("l4x1-8c-32g", 0.18, 8, 32_768, "L4", 1, 24_576),
    Shape("a100x4-48c-384g", 0.07, 48, 393_216, "A100", 4, 81_920),
    Shape("a100x8-96c-1t", 0.05, 96, 1_048_576, "A100", 8, 40_960),
    Shape("h100x8-192c-2t", 0.05, 192, 2_097_152, "H100", 8, 81_920),
)


def make_fleet(n: int, rng: random.Random, zone_names: Sequence[str] = ZONES) -> list[WorkerSpec]:
    shapes = rng.choices(SHAPES, weights=[s.weight for s in SHAPES], k=n)
    fleet = []
    for i, shape in enumerate(shapes):
        hostname = f"host-{i:05d}"
        fleet.append(
            WorkerSpec(
                name=hostname,
                cpu=shape.cpu,
                ram_mb=shape.ram_mb,
                gpus=tuple(
                    GPUDevice(index=d, model=shape.gpu_model, memory_mb=shape.gpu_mem_mb)
                    for d in range(shape.gpu_count)
                ),
                labels={
                    "zone": rng.choice(zone_names),
                    "tier": rng.choices(TIERS, weights=TIER_WEIGHTS)[0],
                    "hostname": hostname,
                },
            )
        )
    return fleet


# -- requests ---------------------------------------------------------------

REQUIRED = (
    "zone=zone-a",
    "tier!=spot",
    "zone in (zone-b, zone-c)",
    "tier=standard",
)


def _cpu_only(rng: random.Random) -> dict[str, Any]:
    return {
        "cpu": rng.choice((0.25, 0.5, 1.0, 2.0, 4.0, 8.0)),
        "ram_mb": rng.choice((128, 256, 512, 1024, 2048)),
    }


def _ram_heavy(rng: random.Random) -> dict[str, Any]:
    return {
        "cpu": rng.choice((1.0, 2.0, 4.0)),
        "ram_mb": rng.choice((16_384, 32_768, 65_536, 131_072)),
    }


def _gpu_share(rng: random.Random) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "cpu": rng.choice((0.5, 1.0, 2.0)),
        "ram_mb": rng.choice((2_048, 4_096, 8_192)),
        "gpus": rng.choice((0.25, 0.5)),
    }
    if rng.random() < 0.3:
        fields["gpu_models"] = ("L4",)
    return fields


def _gpu_whole(rng: random.Random) -> dict[str, Any]:
    gpus = rng.choices((1, 2, 4), weights=(0.6, 0.2, 0.2))[0]
    fields: dict[str, Any] = {"cpu": 4.0 * gpus, "ram_mb": 32_768 * gpus, "gpus": float(gpus)}
    if rng.random() < 0.4:
        fields["gpu_models"] = rng.choice((("A100", "H100"), ("H100",)))
    return fields


KINDS = ((_cpu_only, 0.60), (_ram_heavy, 0.17), (_gpu_share, 0.15), (_gpu_whole, 0.08))


def make_request(rng: random.Random, n_workers: int) -> ResourceRequest:
    kind = rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])[0]
    fields = kind(rng)
    required: list[LabelSelector] = []
    if rng.random() < 0.25:
        required.append(LabelSelector.parse(rng.choice(REQUIRED)))
    if rng.random() < 0.02:
        # random() rather than randrange(n): the draws stay in step across fleet sizes
        host = int(rng.random() * n_workers)
        required.append(LabelSelector.parse(f"hostname=host-{host:05d}"))
    preferred: list[PreferredLabel] = []
    if rng.random() < 0.25:
        selector = LabelSelector.parse(f"zone={rng.choice(ZONES)}")
        preferred.append(PreferredLabel(selector=selector, weight=rng.randint(1, 50)))
    return ResourceRequest(**fields, required=tuple(required), preferred=tuple(preferred))


def make_catalog(n: int, n_workers: int, rng: random.Random) -> list[ResourceRequest]:
    """Distinct request types; real tasks repeat a few request shapes many times."""
    return [make_request(rng, n_workers) for _ in range(n)]


def kind_of(request: ResourceRequest) -> str:
    """A label for the breakdown table: request kind, plus "+host" for a hostname selector."""
    if request.gpus >= 1:
        kind = "gpu-whole"
    elif request.gpus > 0:
        kind = "gpu-share"
    elif request.ram_mb >= 16_384:
        kind = "ram-heavy"
    else:
        kind = "cpu-only"
    if any(s.key == "hostname" for s in request.required):
        kind += "+host"
    return kind


# -- measurement ------------------------------------------------------------


@dataclass(slots=True)
class Preload:
    reservations: int
    cpu_util: float
    gpu_util: float


def preload(
    pool: ResourceAwareWorkerPool,
    fleet: Sequence[WorkerSpec],
    load: float,
    catalog: Sequence[ResourceRequest],
    rng: random.Random,
) -> Preload:
    """Place random requests until ``load`` of the cluster's CPU is reserved."""
    total_cpu = sum(w.cpu for w in fleet)
    total_gpu = sum(len(w.gpus) for w in fleet)
    cpu = gpu = 0.0
    held = misses = 0
    while cpu < load * total_cpu and misses < 5_000:
        request = rng.choice(catalog)
        if isinstance(pool.place(request), Placement):
            cpu += request.cpu
            gpu += request.gpus
            held += 1
            misses = 0
        else:
            misses += 1
    return Preload(held, cpu / total_cpu, gpu / total_gpu if total_gpu else 0.0)


def time_place_release(
    pool: ResourceAwareWorkerPool, ops: Sequence[ResourceRequest], batch: int
) -> tuple[int, int]:
    """Nanoseconds for place+release of every op (timed per batch), and how many placed."""
    place, release = pool.place, pool.release
    elapsed = placed = 0
    for start in range(0, len(ops), batch):
        chunk = ops[start : start + batch]
        t0 = time.perf_counter_ns()
        for request in chunk:
            result = place(request)
            if type(result) is Placement:
                release(result.key)
                placed += 1
        elapsed += time.perf_counter_ns() - t0
    return elapsed, placed


def time_place_only(pool: ResourceAwareWorkerPool, ops: Sequence[ResourceRequest]) -> list[int]:
    """Nanoseconds spent inside each ``place``; releases happen outside the clock."""
    place, release, clock = pool.place, pool.release, time.perf_counter_ns
    times: list[int] = []
    for request in ops:
        t0 = clock()
        result = place(request)
        times.append(clock() - t0)
        if type(result) is Placement:
            release(result.key)
    return times


def time_by_kind(
    pool: ResourceAwareWorkerPool, ops: Sequence[ResourceRequest]
) -> dict[tuple[str, str], list[int]]:
    """Per (request kind, outcome): [count, nanoseconds inside place]."""
    acc: dict[tuple[str, str], list[int]] = {}
    for request in ops:
        t0 = time.perf_counter_ns()
        result = pool.place(request)
        elapsed = time.perf_counter_ns() - t0
        outcome = "placed" if isinstance(result, Placement) else result.kind
        if isinstance(result, Placement):
            pool.release(result.key)
        slot = acc.setdefault((kind_of(request), outcome), [0, 0])
        slot[0] += 1
        slot[1] += elapsed
    return acc


@dataclass(slots=True)
class Breakdown:
    workers: int
    policy: str
    kind: str
    outcome: str
    count: int
    place_us: float


@dataclass(slots=True)
class Row:
    workers: int
    policy: str
    classes: int
    preloaded: int
    cpu_util: float
    gpu_util: float
    placed_share: float
    place_release_us: float
    place_us: float
    place_p50_us: float
    """The median decision (the other figures are means)."""
    place_release_us_runs: list[float]
    place_us_runs: list[float]
    build_s: float
    breakdown: list[Breakdown]


def measure(fleet: Sequence[WorkerSpec], policy: str, args: argparse.Namespace, seed: int) -> Row:
    rng = random.Random(f"workload-{seed}")  # the same request types at every fleet size
    catalog = make_catalog(args.distinct, len(fleet), rng)
    t0 = time.perf_counter()
    pool = ResourceAwareWorkerPool(fleet, policy=policy)
    build_s = time.perf_counter() - t0
    pre = preload(pool, fleet, args.load, catalog, rng)
    ops = [rng.choice(catalog) for _ in range(args.ops)]
    time_place_release(pool, ops[: min(len(ops), 2_000)], args.batch)  # warm plan cache
    both: list[float] = []
    alone: list[float] = []
    p50s: list[float] = []
    placed = 0
    gc.collect()
    gc.disable()
    try:
        for _ in range(args.repeats):
            ns, placed = time_place_release(pool, ops, args.batch)
            both.append(ns / 1_000 / len(ops))
            times = time_place_only(pool, ops)
            alone.append(sum(times) / 1_000 / len(ops))
            p50s.append(statistics.median(times) / 1_000)
        by_kind = time_by_kind(pool, ops) if args.breakdown else {}
    finally:
        gc.enable()
    breakdown = [
        Breakdown(len(fleet), policy, kind, outcome, count, ns / 1_000 / count)
        for (kind, outcome), (count, ns) in sorted(by_kind.items())
    ]
    return Row(
        workers=len(fleet),
        policy=policy,
        classes=len(pool._classes),
        preloaded=pre.reservations,
        cpu_util=pre.cpu_util,
        gpu_util=pre.gpu_util,
        placed_share=placed / len(ops),
        place_release_us=statistics.median(both),
        place_us=statistics.median(alone),
        place_p50_us=statistics.median(p50s),
        place_release_us_runs=both,
        place_us_runs=alone,
        build_s=build_s,
        breakdown=breakdown,
    )


def render(rows: Sequence[Row]) -> str:
    headers = (
        "workers",
        "policy",
        "classes",
        "preloaded",
        "cpu util",
        "gpu util",
        "placed",
        "place+release us",
        "place us",
        "place us p50",
    )
    body = [
        (
            f"{r.workers:,}",
            r.policy,
            r.classes,
            f"{r.preloaded:,}",
            f"{r.cpu_util:.1%}",
            f"{r.gpu_util:.1%}",
            f"{r.placed_share:.1%}",
            f"{r.place_release_us:.1f}",
            f"{r.place_us:.1f}",
            f"{r.place_p50_us:.1f}",
        )
        for r in rows
    ]
    return table(headers, body)


def render_breakdown(rows: Sequence[Row]) -> str:
    headers = ("workers", "policy", "request kind", "outcome", "ops", "share", "place us")
    body = [
        (
            f"{b.workers:,}",
            b.policy,
            b.kind,
            b.outcome,
            f"{b.count:,}",
            f"{b.count / sum(x.count for x in r.breakdown):.1%}",
            f"{b.place_us:.1f}",
        )
        for r in rows
        for b in r.breakdown
    ]
    return table(headers, body)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.placement_cost",
        description="Microseconds per placement decision on a synthetic heterogeneous fleet.",
    )
    parser.add_argument(
        "--workers",
        type=int_list,
        default=[100, 1_000, 10_000],
        help="fleet sizes, comma-separated (default: 100,1000,10000)",
    )
    add_policies_argument(parser, "time")
    parser.add_argument(
        "--load",
        type=float,
        default=0.5,
        help="share of cluster CPU reserved before timing (default: 0.5)",
    )
    parser.add_argument(
        "--ops",
        type=int,
        default=20_000,
        help="place+release operations per repeat (default: 20000)",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed repeats; medians are reported (default: 5)"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=1_000,
        help="operations per perf_counter_ns batch (default: 1000)",
    )
    parser.add_argument(
        "--distinct",
        type=int,
        default=200,
        help="distinct request types in the workload (default: 200)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="one more pass with a timer per call: us per place by request kind and outcome",
    )
    parser.add_argument(
        "--zones",
        type=int,
        default=3,
        help="zone label values (default: 3); shape classes grow with them, 16 per zone",
    )
    parser.add_argument("--seed", type=int, default=1, help="RNG seed (default: 1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)
    if not 0 <= args.load < 1:
        parser.error("--load must be in [0, 1)")
    if args.zones < 3:
        parser.error("--zones must be at least 3 (the request selectors name zone-a to zone-c)")
    if args.ops < 1 or args.repeats < 1 or args.batch < 1 or args.distinct < 1:
        parser.error("--ops, --repeats, --batch and --distinct must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment()  # the code as imported, before anyone edits it mid-run
    print(
        f"placement cost: load {args.load:.0%} of CPU, {args.ops:,} ops x {args.repeats} "
        f"repeats, {args.distinct} request types, {args.zones} zones, seed {args.seed}; "
        "medians over repeats"
    )
    rows: list[Row] = []
    for n in args.workers:
        fleet = make_fleet(n, random.Random(f"fleet-{args.seed}"), zones(args.zones))
        for policy in args.policies:
            row = measure(fleet, policy, args, args.seed)
            rows.append(row)
            print(f"  {n:>6,} workers  {policy:<8} done", flush=True)
    print()
    print(render(rows))
    if args.breakdown:
        print("\nper request kind and outcome (one extra pass, place only):\n")
        print(render_breakdown(rows))
    if args.json:
        payload = {
            "benchmark": "placement_cost",
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "environment": env,
            "shapes": [asdict(s) for s in SHAPES],
            "results": [asdict(r) for r in rows],
        }
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
