"""The workloads of ``benchmarks.throughput`` on Dask distributed, for a side-by-side ratio.

Starts a dask ``LocalCluster`` of ``--workers`` worker processes (each under a nanny,
``--threads`` threads each) advertising ``resources={"cpu": 64}`` like our agents'
``--cpus 64``, and a Client in this process (the LocalCluster scheduler runs here too,
on its own event-loop thread). Every task asks for ``resources={"cpu": 1}``. The
workloads, sizes and figures are those of ``benchmarks._workload``, submitted with
``client.submit``; medians over ``--repeats``, same keys as ``benchmarks.throughput``.
Dask is an optional extra: exits with code 2 without it.

    python -m benchmarks.dask_peer --tasks 5000 --repeats 3
    python -m benchmarks.dask_peer --tasks 2000 --repeats 1 --json
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from importlib.metadata import version
from typing import IO, TYPE_CHECKING, Any

from benchmarks._workload import Sizes, add_size_arguments, report, rounds, sizes_from

if TYPE_CHECKING:
    from distributed import Client, Future

CPU = {"cpu": 1}
WORKER_CPUS = 64


def noop(x: Any = None) -> Any:
    return x


class DaskPeer:
    """Dask distributed as a ``Peer``, through one client."""

    name = "Dask"

    def __init__(self, client: Client) -> None:
        self._client = client

    def _submit(self, *args: Any) -> Future[Any]:
        return self._client.submit(noop, *args, resources=CPU, pure=False)

    def throughput(self, n: int) -> float:
        start = time.perf_counter()
        futures = [self._submit(i) for i in range(n)]
        results = self._client.gather(futures)  # type: ignore[no-untyped-call]
        elapsed = time.perf_counter() - start
        assert results == list(range(n))
        return n / elapsed

    def round_trips(self, n: int, value: Any) -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            result = self._submit(value).result(timeout=60)
            times.append(time.perf_counter() - start)
            assert result == value
        return times

    def chain(self, length: int) -> float:
        start = time.perf_counter()
        futures: list[Future[Any]] = [self._submit(0)]
        for _ in range(1, length):
            futures.append(self._submit(futures[-1]))
        result = futures[-1].result(timeout=300)
        elapsed = time.perf_counter() - start
        assert result == 0
        return elapsed

    def fan(self, width: int, value: Any) -> float:
        """The client waits for the middle without gathering it, then runs the sink, as
        the Ray peer does (the fleet's sink is ordered after the middle, receiving none)."""
        from distributed import wait

        start = time.perf_counter()
        source = self._submit(value)
        middle = [self._submit(source) for _ in range(width)]
        wait(middle, timeout=600)  # type: ignore[no-untyped-call]
        result = self._submit(2).result(timeout=60)
        elapsed = time.perf_counter() - start
        assert result == 2
        return elapsed


def quiet_worker_logs() -> None:
    """Run on every worker before closing: a heartbeat racing the shutdown logs a traceback."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


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
        rows = rounds(DaskPeer(client), sizes_from(args), args.repeats, out)
        client.run(quiet_worker_logs)
        return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_size_arguments(parser, Sizes(round_trips=300, payload=0))
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
    heading = (
        f"medians of {args.repeats} runs, {args.workers} dask workers x {args.threads} "
        "threads, every process on this host"
    )
    report(rows, heading, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
