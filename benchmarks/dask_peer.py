"""The workloads of ``benchmarks.throughput`` on Dask distributed, for a side-by-side ratio.

Starts a dask ``LocalCluster`` of ``--workers`` worker processes (each under a nanny,
``--threads`` threads each) advertising ``resources={"cpu": 64}`` like our agents'
``--cpus 64``, and a Client in this process (the LocalCluster scheduler runs here too,
on its own event-loop thread). Every task asks for ``resources={"cpu": 1}``. Per
repeat: N no-op tasks submitted at once with ``client.submit`` and gathered (tasks/s),
one-at-a-time round trips (p50/p99), a chain of dependent tasks (ms per hop) and a
1 -> N -> 1 fan-out (seconds). Medians over ``--repeats``, same keys as
``benchmarks.throughput``. Dask is an optional extra: exits with code 2 without it.

    python -m benchmarks.dask_peer --tasks 5000 --repeats 3
    python -m benchmarks.dask_peer --tasks 2000 --repeats 1 --json
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import statistics
import sys
import time
from importlib.metadata import version
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client, Future

CPU = {"cpu": 1}
WORKER_CPUS = 64


def noop(x: Any = None) -> Any:
    return x


def collect(xs: list[Any]) -> int:
    return len(xs)


def throughput(client: Client, n: int) -> float:
    start = time.perf_counter()
    futures = [client.submit(noop, i, resources=CPU, pure=False) for i in range(n)]
    results = client.gather(futures)  # type: ignore[no-untyped-call]
    elapsed = time.perf_counter() - start
    assert results == list(range(n))
    return n / elapsed


def round_trips(client: Client, n: int) -> list[float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        result = client.submit(noop, i, resources=CPU, pure=False).result(timeout=30)
        times.append(time.perf_counter() - start)
        assert result == i
    return times


def chain(client: Client, length: int) -> float:
    """Seconds for ``length`` tasks, each taking the previous one's future."""
    start = time.perf_counter()
    futures: list[Future[Any]] = [client.submit(noop, 0, resources=CPU, pure=False)]
    for _ in range(1, length):
        futures.append(client.submit(noop, futures[-1], resources=CPU, pure=False))
    result = futures[-1].result(timeout=300)
    elapsed = time.perf_counter() - start
    assert result == 0
    return elapsed


def fan(client: Client, width: int) -> float:
    """Seconds for one source, ``width`` tasks taking it and one sink taking all of them."""
    start = time.perf_counter()
    source = client.submit(noop, 1, resources=CPU, pure=False)
    middle = [client.submit(noop, source, resources=CPU, pure=False) for _ in range(width)]
    sink = client.submit(collect, middle, resources=CPU, pure=False)
    result = sink.result(timeout=300)
    elapsed = time.perf_counter() - start
    assert result == width
    return elapsed


def quiet_worker_logs() -> None:
    """Run on every worker before closing: a heartbeat racing the shutdown logs a traceback."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(client: Client, args: argparse.Namespace, out: IO[str]) -> list[dict[str, float]]:
    throughput(client, 200)  # warm-up, as in benchmarks.throughput
    fan(client, 10)  # ... plus the sink function, so the first fan-out does not ship it
    rows = []
    for _ in range(args.repeats):
        row = {"tasks_per_s": throughput(client, args.tasks)}
        rt = round_trips(client, args.round_trips)
        row["rt_p50_ms"] = statistics.median(rt) * 1000
        row["rt_p99_ms"] = pct(rt, 0.99) * 1000
        row["chain_ms_per_hop"] = chain(client, args.chain) / args.chain * 1000
        row["fanout_s"] = fan(client, args.fan)
        rows.append(row)
        print("  " + "  ".join(f"{k}={v:.2f}" for k, v in row.items()), file=out, flush=True)
    return rows


def run(args: argparse.Namespace, out: IO[str]) -> list[dict[str, float]]:
    from distributed import Client, LocalCluster

    print(
        f"dask {version('dask')}, distributed {version('distributed')}: LocalCluster of "
        f"{args.workers} worker processes x threads_per_worker={args.threads}, "
        f'resources={{"cpu": {WORKER_CPUS}}} each, scheduler in this process',
        file=out,
        flush=True,
    )
    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=args.workers,
            threads_per_worker=args.threads,
            processes=True,
            resources={"cpu": WORKER_CPUS},
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        client.wait_for_workers(args.workers, timeout=120)
        rows = measure(client, args, out)
        client.run(quiet_worker_logs)
        return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--chain", type=int, default=200)
    parser.add_argument("--fan", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="threads per worker process (default 2: measured best no-op throughput of 1, 2, 4)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print only the medians as JSON on stdout (progress goes to stderr)",
    )
    args = parser.parse_args(argv)
    try:
        importlib.import_module("distributed")
    except ImportError as exc:
        print(
            f"dask_peer needs dask distributed, an optional extra that is not installed ({exc}):"
            " pip install 'dask[distributed]'",
            file=sys.stderr,
        )
        return 2
    out = sys.stderr if args.json else sys.stdout
    rows = run(args, out)
    medians = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    if args.json:
        print(json.dumps(medians))
        return 0
    print(
        f"\nmedians of {args.repeats} runs, {args.workers} dask workers x {args.threads} "
        "threads, every process on this host"
    )
    for key, value in medians.items():
        print(f"  {key:18} {value:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
