"""A deep queue end to end: ``--tasks`` no-op tasks kiq'd faster than the agents run them.

nats-server, a coordinator and ``--agents`` agents of ``--cpus`` cores run as separate
processes on this host (every task reserves 1 cpu, so at most agents x cpus run at once).
The benchmark's ``FleetBroker`` first measures the submission rate of ``--reference``
(5,000) tasks kiq'd at once (the reference), then kiqs ``--tasks`` in bursts of
``--burst`` without waiting for any result, then waits for every result (``wait_result()``,
as a taskiq user would) and checks each. Meanwhile it samples the coordinator's resident
memory and CPU time.

It prints the submission rate (overall, and the slowest ``--window`` tasks) against the
reference, the deepest queue seen (kiq'd and not yet finished), the coordinator's peak
RSS and CPU seconds, and how long until every result was in.

    python -m benchmarks.scale --tasks 1000000
    python -m benchmarks.scale --tasks 20000 --json /tmp/scale.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]

from benchmarks import bench_tasks
from benchmarks._common import (
    environment,
    fleet_processes,
    log_events,
    stop_on_sigterm,
    write_json,
)
from benchmarks._workload import positive
from taskiq_fleet import CoordinatorClient
from taskiq_fleet.broker import FleetTask

APP = "benchmarks.bench_tasks:broker"
TROUBLES = (
    "lease not renewed in time; waiting before acting",
    "disconnected from NATS; no worker is judged lost until it is back",
    "runs not stored; will retry",
)
"""What the coordinator logs when it falls behind its own work (the stop-gaps it takes)."""
GiB = 1 << 30


@dataclass
class Sampler:
    """One process's resident memory and CPU time, sampled from a thread every ``every`` s."""

    pid: int
    every: float = 0.25
    peak_rss: int = 0
    series: list[tuple[float, int, int]] = field(default_factory=list)
    """(seconds since start, RSS bytes, queued runs) per sample."""
    queued: int = 0
    """Set by the driver: runs kiq'd and not finished yet."""
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._proc = psutil.Process(self.pid)
        self._cpu0 = self._cpu()
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _cpu(self) -> float:
        times = self._proc.cpu_times()
        return float(times.user + times.system)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            rss = int(self._proc.memory_info().rss)
            self.peak_rss = max(self.peak_rss, rss)
            self.series.append((time.perf_counter() - self._start, rss, self.queued))

    def cpu_seconds(self) -> float:
        return self._cpu() - self._cpu0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def rss_at_deepest(self) -> tuple[int, int]:
        """(queued, RSS) at the sample with the deepest queue."""
        if not self.series:
            return 0, 0
        _, rss, queued = max(self.series, key=lambda s: (s[2], s[1]))
        return queued, rss


async def connect(url: str, agents: int) -> CoordinatorClient:
    bench_tasks.broker.nats = url
    await bench_tasks.broker.startup()
    client = bench_tasks.broker.connected()
    assert isinstance(client, CoordinatorClient)
    await client.wait_ready(agents, within=60)
    return client


async def kiq(first: int, n: int) -> list[FleetTask]:
    tasks = await asyncio.gather(*(bench_tasks.noop.kiq(i) for i in range(first, first + n)))
    return [t for t in tasks if isinstance(t, FleetTask)]


async def collect(tasks: list[FleetTask], first: int, burst: int) -> int:
    """Every result, ``burst`` waited on at a time, each task let go once checked (a million
    ended runs' views would fill this process); returns how many were wrong or failed."""
    wrong, total = 0, len(tasks)
    for start in range(0, total, burst):
        chunk, tasks[:burst] = tasks[:burst], []
        results = await asyncio.gather(
            *(t.wait_result(timeout=3600) for t in chunk), return_exceptions=True
        )
        del chunk
        for i, result in enumerate(results, first + start):
            if isinstance(result, BaseException) or result.return_value != i:
                wrong += 1
                if wrong <= 3:
                    print(f"  task {i}: {result!r}"[:300], file=sys.stderr)
    return wrong


@dataclass
class Report:
    tasks: int
    agents: int
    cpus: int
    reference: int = 5000
    reference_rate: float = 0.0
    """Tasks/s kiq'd in one burst of ``reference`` tasks on the idle fleet."""
    rate: float = 0.0
    slowest_window_rate: float = 0.0
    first_window_rate: float = 0.0
    last_window_rate: float = 0.0
    window: int = 0
    submit_s: float = 0.0
    deepest_queue: int = 0
    rss_at_deepest: int = 0
    peak_rss: int = 0
    cpu_s: float = 0.0
    all_done_s: float = 0.0
    wrong: int = 0
    troubles: dict[str, int] = field(default_factory=dict)
    """Warnings of the coordinator's log that mean it fell behind, by event."""
    series: list[tuple[float, int, int]] = field(default_factory=list)


async def drive(client: CoordinatorClient, sampler: Sampler, report: Report, burst: int) -> None:
    start = time.perf_counter()
    first = report.reference
    warm = await kiq(0, first)
    report.reference_rate = first / (time.perf_counter() - start)
    report.wrong += await collect(warm, 0, burst)
    marks: list[tuple[int, float]] = [(0, time.perf_counter())]
    tasks: list[FleetTask] = []
    begin = marks[0][1]
    while len(tasks) < report.tasks:
        tasks += await kiq(first + len(tasks), min(burst, report.tasks - len(tasks)))
        marks.append((len(tasks), time.perf_counter()))
        sampler.queued = len(client._handles)
        report.deepest_queue = max(report.deepest_queue, sampler.queued)
    report.submit_s = marks[-1][1] - begin
    report.rate = report.tasks / report.submit_s
    report.slowest_window_rate = slowest(marks, report.window)
    report.first_window_rate = window_rate(marks, report.window, first=True)
    report.last_window_rate = window_rate(marks, report.window, first=False)
    report.wrong += await collect(tasks, first, burst)
    report.all_done_s = time.perf_counter() - begin


def slowest(marks: Sequence[tuple[int, float]], window: int) -> float:
    """The lowest rate over any stretch of at least ``window`` tasks between two marks."""
    worst = float("inf")
    j = 0
    for i in range(1, len(marks)):
        while j + 1 < i and marks[i][0] - marks[j + 1][0] >= window:
            j += 1
        done, took = marks[i][0] - marks[j][0], marks[i][1] - marks[j][1]
        if done >= window and took > 0:
            worst = min(worst, done / took)
    return worst if worst != float("inf") else 0.0


def window_rate(marks: Sequence[tuple[int, float]], window: int, *, first: bool) -> float:
    """The rate over the first (or last) ``window`` tasks submitted, between marks."""
    if first:
        end = next((m for m in marks if m[0] - marks[0][0] >= window), marks[-1])
        begin = marks[0]
    else:
        end = marks[-1]
        begin = next((m for m in reversed(marks) if end[0] - m[0] >= window), marks[0])
    took = end[1] - begin[1]
    return (end[0] - begin[0]) / took if took > 0 else 0.0


async def _queue_watch(client: CoordinatorClient, sampler: Sampler, report: Report) -> None:
    while True:
        sampler.queued = len(client._handles)
        report.deepest_queue = max(report.deepest_queue, sampler.queued)
        await asyncio.sleep(0.25)


async def run(url: str, pid: int, report: Report, burst: int) -> None:
    client = await connect(url, report.agents)
    sampler = Sampler(pid)
    watch = asyncio.create_task(_queue_watch(client, sampler, report))
    try:
        await drive(client, sampler, report, burst)
    finally:
        watch.cancel()
        sampler.stop()
        report.peak_rss = sampler.peak_rss
        report.cpu_s = sampler.cpu_seconds()
        report.deepest_queue, report.rss_at_deepest = sampler.rss_at_deepest()
        report.series = sampler.series[:: max(1, len(sampler.series) // 400)]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bench_tasks.broker.shutdown(), 10)


def describe(r: Report) -> str:
    ratio = r.rate / r.reference_rate if r.reference_rate else 0.0
    worst = r.slowest_window_rate / r.reference_rate if r.reference_rate else 0.0
    done_rate = r.tasks / r.all_done_s if r.all_done_s else 0.0
    rows = [
        (f"submission, {r.reference:,} at once", f"{r.reference_rate:,.0f} tasks/s"),
        (f"submission, all {r.tasks:,}", f"{r.rate:,.0f} tasks/s ({ratio:.0%})"),
        (f"slowest {r.window:,} submitted", f"{r.slowest_window_rate:,.0f} tasks/s ({worst:.0%})"),
        (
            f"first / last {r.window:,}",
            f"{r.first_window_rate:,.0f} / {r.last_window_rate:,.0f} tasks/s",
        ),
        ("deepest queue", f"{r.deepest_queue:,} runs"),
        ("coordinator RSS there", f"{r.rss_at_deepest / GiB:.2f} GiB"),
        ("coordinator peak RSS", f"{r.peak_rss / GiB:.2f} GiB"),
        ("coordinator CPU", f"{r.cpu_s:,.0f} s"),
        ("submitted in", f"{r.submit_s:,.1f} s"),
        ("every result in", f"{r.all_done_s:,.1f} s ({done_rate:,.0f} tasks/s)"),
        ("wrong or failed results", f"{r.wrong:,}"),
        *((f"coordinator log: {event}", f"{n:,}") for event, n in r.troubles.items()),
    ]
    head = f"{r.tasks:,} tasks, {r.agents} agents x {r.cpus} cpu, every process on this host"
    return "\n".join([head, *(f"  {k:<32} {v}" for k, v in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tasks", type=positive, default=100_000)
    parser.add_argument("--agents", type=positive, default=2)
    parser.add_argument("--cpus", type=positive, default=1, help="cores per agent")
    parser.add_argument("--burst", type=positive, default=5000, help="kiq'd per gather")
    parser.add_argument("--window", type=positive, default=50_000)
    parser.add_argument("--reference", type=positive, default=5000, help="tasks of the first burst")
    parser.add_argument(
        "--lease-ttl",
        help="the coordinator's --lease-ttl (its own default when not given)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    window = min(args.window, args.tasks)
    report = Report(args.tasks, args.agents, args.cpus, reference=args.reference, window=window)
    stop_on_sigterm()
    extra = () if args.lease_ttl is None else ("--lease-ttl", args.lease_ttl)
    with fleet_processes(args.agents, APP, args.cpus, extra, stop_within=60) as (url, pid, logs):
        try:
            asyncio.run(run(url, pid, report, args.burst))
        finally:
            report.troubles = log_events(logs / "coordinator.log", TROUBLES)
    print(describe(report))
    if args.json is not None:
        payload: dict[str, Any] = {"environment": environment(), **asdict(report)}
        write_json(args.json, payload)
    return 1 if report.wrong else 0


if __name__ == "__main__":
    sys.exit(main())
