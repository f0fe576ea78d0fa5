"""The fleet against Ray in one command: the same workloads, taken in turn, N rounds.

Both systems run at once under this process for the whole command, with the same
concurrency: ``--workers`` (2) tasks at a time, each reserving 1 cpu. Ours is nats-server,
a coordinator and ``--workers`` agents of 1 cpu each (separate processes, as
``benchmarks.throughput``); Ray is ``ray.init(num_cpus=--workers)``, one worker process
per cpu, every task ``num_cpus=1``. Each round takes every workload of
``benchmarks._workload`` on both, one after the other (who goes first swaps every round),
so noise on this shared machine lands on both sides of a ratio. It prints every round's
values, the ratio per round (fleet time / Ray time: lower is better; for throughput also
fleet tasks/s / Ray tasks/s) and the median ratio, then the peak RSS of each side.

    python -m benchmarks.peers --rounds 3
    python -m benchmarks.peers --rounds 1 --tasks 500 --round-trips 50 --payload-fan 50
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]

from benchmarks._common import table
from benchmarks._workload import (
    Figure,
    Peer,
    Sizes,
    Step,
    add_size_arguments,
    positive,
    sizes_from,
    warm_up,
)
from benchmarks._workload import figures as figures_at
from benchmarks._workload import steps as steps_at
from benchmarks.ray_peer import describe, ray_installed, ray_peer
from benchmarks.throughput import fleet_peer

Rows = Sequence[dict[str, float]]


def time_ratios(fleet: Sequence[float], ray: Sequence[float], rate: bool) -> list[float]:
    """Fleet time / Ray time per round; a rate's time is its inverse, so Ray / fleet."""
    return [r / f if rate else f / r for f, r in zip(fleet, ray, strict=True)]


def rate_ratios(fleet: Sequence[float], ray: Sequence[float]) -> list[float]:
    return [f / r for f, r in zip(fleet, ray, strict=True)]


def _values(values: Sequence[float], unit: str) -> str:
    digits = {"tasks/s": 0, "ms": 2, "s": 3}.get(unit, 2)
    return " / ".join(f"{v:.{digits}f}" for v in values)


def _ratios(ratios: Sequence[float]) -> list[str]:
    return [" / ".join(f"{r:.2f}" for r in ratios), f"{statistics.median(ratios):.2f}"]


def comparison(figures: Sequence[Figure], fleet: Rows, ray: Rows) -> str:
    """The closing table: per figure, each round's value on both sides, the fleet/Ray time
    ratio per round and its median; a rate gets a second line with the rates' ratio."""
    rows: list[list[str]] = []
    for fig in figures:
        ours = [row[fig.key] for row in fleet]
        theirs = [row[fig.key] for row in ray]
        line = [fig.label, fig.unit, _values(ours, fig.unit), _values(theirs, fig.unit)]
        rows.append(line + _ratios(time_ratios(ours, theirs, fig.higher_is_better)))
        if fig.higher_is_better:
            rates = f"  same, fleet {fig.unit} / Ray {fig.unit}"
            rows.append([rates, "", "", "", *_ratios(rate_ratios(ours, theirs))])
    headers = ["figure", "unit", "fleet per round", "Ray per round", "fleet/Ray time", "median"]
    return table(headers, rows)


def _progress(step: str, order: Sequence[Peer], found: dict[str, dict[str, float]]) -> str:
    sides = [
        f"{peer.name} " + " ".join(f"{k}={v:.2f}" for k, v in found[peer.name].items())
        for peer in order
    ]
    return f"  {step:20} " + " | ".join(sides)


def settled(step: Step, peer: Peer, sizes: Sizes) -> dict[str, float]:
    """The step's figures, and the disk written back before the next step: our payloads are
    stored on disk (a 1 MB fan-out writes 1 GB), and the kernel writing them back on the
    same two cores slowed whatever ran next (5,000 at once: 855-1,034 tasks/s after a
    payload step, 1,034-1,181 before any)."""
    found = step(peer, sizes)
    os.sync()
    return found


def alternate(
    peers: Sequence[Peer], sizes: Sizes, rounds: int
) -> dict[str, list[dict[str, float]]]:
    """Every step of every round on each peer in turn, the first peer swapping each round."""
    rows: dict[str, list[dict[str, float]]] = {peer.name: [] for peer in peers}
    for number in range(rounds):
        order = list(peers) if number % 2 == 0 else list(reversed(peers))
        print(f"round {number + 1}/{rounds}, {' first, then '.join(p.name for p in order)}:")
        for peer in peers:
            rows[peer.name].append({})
        for name, step in steps_at(sizes):
            found = {peer.name: settled(step, peer, sizes) for peer in order}
            for peer in order:
                rows[peer.name][-1].update(found[peer.name])
            print(_progress(name, order, found), flush=True)
    return rows


def peak_rss_mib(pids: set[int]) -> tuple[int, float] | None:
    """(processes, MiB): the sum of each live process's own peak resident set (VmHWM);
    ``None`` where /proc does not say (not Linux)."""
    total_kib = counted = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total_kib += int(line.split()[1])
                counted += 1
    return (counted, total_kib / 1024) if counted else None


def descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def rss_line(fleet_pids: set[int], ray_pids: set[int]) -> str | None:
    fleet, ray = peak_rss_mib(fleet_pids), peak_rss_mib(ray_pids)
    if fleet is None or ray is None:
        return None
    return (
        f"peak RSS, summed over each side's processes (each one's own peak): fleet "
        f"{fleet[1]:.0f} MiB in {fleet[0]} processes, Ray {ray[1]:.0f} MiB in {ray[0]}; this "
        "driver process (both clients) is not counted, and shared memory (Ray's object store) "
        "counts in every process that maps it"
    )


def leftovers(pids: set[int]) -> list[str]:
    """Our children that outlived their system's shutdown, after waiting for them to exit."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=15)
    return [f"{p.pid} {p.name()}" for p in alive if p.is_running()]


def run(sizes: Sizes, rounds: int, workers: int) -> int:
    print(
        f"{workers} tasks at a time on each side, each reserving 1 cpu: fleet {workers} agents "
        f"x 1 cpu (separate processes, one coordinator, nats-server); {describe(workers)}"
    )
    with fleet_peer(workers, cpus=1) as fleet:
        fleet_pids = descendants()
        with ray_peer(workers) as ray:
            for peer in (fleet, ray):
                warm_up(peer, sizes)
            rows = alternate([fleet, ray], sizes, rounds)
            ray_pids = descendants() - fleet_pids
            rss = rss_line(fleet_pids, ray_pids)
    print(f"\nfleet vs Ray, {rounds} rounds, every process on this host")
    print(comparison(figures_at(sizes), rows[fleet.name], rows[ray.name]))
    if rss:
        print(f"\n{rss}")
    left = leftovers(fleet_pids | ray_pids)
    if left:
        print(f"\nstill running after shutdown: {', '.join(left)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_size_arguments(parser, Sizes())
    parser.add_argument("--rounds", type=positive, default=3)
    parser.add_argument(
        "--workers",
        type=positive,
        default=2,
        help="tasks at a time on each side: fleet agents of 1 cpu, Ray's num_cpus (default 2)",
    )
    args = parser.parse_args(argv)
    if not ray_installed():
        return 2
    return run(sizes_from(args), args.rounds, args.workers)


if __name__ == "__main__":
    sys.exit(main())
