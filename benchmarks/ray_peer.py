"""The workloads of ``benchmarks.throughput`` on Ray, for a side-by-side ratio.

``ray.init(num_cpus=--cpus)`` starts a local Ray (GCS, raylet, one worker process per
cpu) under this process, without the dashboard; every task asks for ``num_cpus=1``, so
``--cpus 2`` runs two tasks at a time, like two fleet agents of 1 cpu each. The
workloads, sizes and figures are those of ``benchmarks._workload``; medians over
``--repeats``. Ray is an optional extra (``peers``): exits with code 2 without it.
``ray.shutdown()`` stops every Ray process on the way out.

    python -m benchmarks.ray_peer --tasks 5000 --repeats 3
    python -m benchmarks.ray_peer --tasks 2000 --payload 0 --repeats 1 --json
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import IO, Any

from benchmarks._workload import Sizes, add_size_arguments, positive, report, rounds, sizes_from

CPU = 1


def noop(x: Any = None) -> Any:
    return x


class RayPeer:
    """Ray as a ``Peer``. The remote function is made here, not at import, so that this
    module (and the peer command) imports without Ray."""

    name = "Ray"

    def __init__(self) -> None:
        import ray

        self._ray = ray
        self._noop = ray.remote(num_cpus=CPU)(noop)

    def _run(self, *args: Any) -> Any:
        return self._noop.remote(*args)

    def throughput(self, n: int) -> float:
        start = time.perf_counter()
        results = self._ray.get([self._run(i) for i in range(n)])
        elapsed = time.perf_counter() - start
        assert results == list(range(n))
        return n / elapsed

    def round_trips(self, n: int, value: Any) -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            result = self._ray.get(self._run(value), timeout=60)
            times.append(time.perf_counter() - start)
            assert result == value
        return times

    def chain(self, length: int) -> float:
        start = time.perf_counter()
        ref = self._run(0)
        for _ in range(1, length):
            ref = self._run(ref)
        result = self._ray.get(ref, timeout=300)
        elapsed = time.perf_counter() - start
        assert result == 0
        return elapsed

    def fan(self, width: int, value: Any) -> float:
        """Ray has no order-only dependency (a sink taking the results as arguments would
        fetch them all, ``width`` MB with a 1 MB payload): the driver waits for the middle
        without fetching it, then runs the sink, one task later, as the fleet does."""
        start = time.perf_counter()
        source = self._run(value)
        middle = [self._run(source) for _ in range(width)]
        ready, _ = self._ray.wait(middle, num_returns=width, timeout=600, fetch_local=False)
        result = self._ray.get(self._run(2), timeout=60)
        elapsed = time.perf_counter() - start
        assert len(ready) == width
        assert result == 2
        return elapsed


@contextmanager
def ray_peer(cpus: int) -> Iterator[RayPeer]:
    """A local Ray of ``cpus`` cpus for the length of the block, then shut down."""
    import ray

    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        configure_logging=True,
    )
    try:
        yield RayPeer()
    finally:
        ray.shutdown()


def describe(cpus: int) -> str:
    return (
        f"Ray {version('ray')}: ray.init(num_cpus={cpus}), {cpus} worker processes, "
        f"every task num_cpus={CPU}"
    )


def run(args: argparse.Namespace, out: IO[str]) -> list[dict[str, float]]:
    print(describe(args.cpus), file=out, flush=True)
    with ray_peer(args.cpus) as peer:
        return rounds(peer, sizes_from(args), args.repeats, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_size_arguments(parser, Sizes(round_trips=300, payload=0))
    parser.add_argument("--cpus", type=positive, default=2, help="Ray's num_cpus (default 2)")
    parser.add_argument("--repeats", type=positive, default=3)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print only the medians as JSON on stdout (progress goes to stderr)",
    )
    args = parser.parse_args(argv)
    if not ray_installed():
        return 2
    out = sys.stderr if args.json else sys.stdout
    rows = run(args, out)
    heading = f"medians of {args.repeats} runs, {describe(args.cpus)}, every process on this host"
    report(rows, heading, args.json)
    return 0


def ray_installed() -> bool:
    """Ray is an optional extra; without it, say how to get it, in one line."""
    try:
        importlib.import_module("ray")
    except ImportError as exc:
        print(
            f"the Ray peer needs ray, an optional extra that is not installed ({exc}):"
            " pip install 'taskiq-fleet[peers]' (or 'ray>=2.9')",
            file=sys.stderr,
        )
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
