"""The cost of a scheduling pass against the length of the queue, in process.

A ``Scheduler`` with its pool and two workers of ``--cpus`` cores is given ``--queued``
one-node runs (each decoded from the bytes ``FleetBroker.kiq`` sends, so the objects
are the coordinator's own), more than the workers can hold, then:

- *busy pass*: a pass that finds nothing room for (the global cap changed, so the
  scheduler must look again);
- *place pass*: one attempt's outcome applied, the pass that places the next queued
  node in the freed slot, and the decisions taken, as the pump does per iteration.

Each is timed ``--passes`` times per size (median and p99 of this thread's CPU time in
microseconds: other processes on a shared machine do not count). It also prints what a
queued run costs: CPU microseconds to decode and submit, and the growth of this
process's resident memory per queued run, and the full garbage collections made while
the runs were submitted (``--freeze``: as the coordinator does, ``coordinator/heap.py``).

    python -m benchmarks.scale_passes --queued 10000,100000,1000000
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import psutil  # type: ignore[import-untyped, unused-ignore]

from benchmarks import bench_tasks
from benchmarks._common import int_list, table
from benchmarks._workload import pct, positive
from coordinator.heap import Freezer
from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.scheduling.machine import Scheduler
from shared.dag import Dag
from shared.resources import WorkerSpec
from shared.wire.protocol import Assignment, Outcome, Register, encode
from shared.wire.runs import Submit, SubmitBatch, parse_submits

BATCH = 200
"""Submissions per decoded message, as a client's burst sends them."""
INBOX = "fleet.client." + "0" * 32


def kiq_bytes(i: int) -> bytes:
    """One submission exactly as ``FleetBroker.kiq`` encodes it (``noop(i)``)."""
    broker, task = bench_tasks.broker, bench_tasks.noop
    node = broker._node(task.task_name, [i], {}, dict(task.labels))
    submit = Submit.model_construct(
        run_id=uuid.uuid4().hex,
        name=task.task_name,
        progress=False,
        dag=Dag.model_construct(nodes=(node,)),
        fresh=True,
        notify=INBOX,
    )
    return encode(submit)


def messages(n: int) -> Iterator[bytes]:
    for start in range(0, n, BATCH):
        yield SubmitBatch.join([kiq_bytes(i) for i in range(start, min(n, start + BATCH))])


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


@dataclass
class Row:
    queued: int
    submit_us: float
    bytes_per_run: float
    busy: list[float]
    place: list[float]
    full: list[float]
    """Seconds of each full collection while the runs were submitted."""


class FullCollections:
    """Wall time of each full (generation 2) collection while it is installed."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self._noted)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._noted)

    def _noted(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                self._start = time.perf_counter()
            else:
                self.times.append(time.perf_counter() - self._start)


class Bench:
    """A scheduler, two workers and the attempts they hold, driven with a fake clock."""

    def __init__(self, cpus: int) -> None:
        self.sched = Scheduler(ResourceAwareWorkerPool())
        self.now = 1.0
        self.running: list[tuple[Assignment, str]] = []
        for name in ("w0", "w1"):
            spec = WorkerSpec(name=name, cpu=cpus, ram_mb=1 << 20)
            self.sched.register(
                Register(
                    spec=spec,
                    agent_version="bench",
                    pid=1,
                    started_at=1.0,
                    heartbeat_interval=1e9,
                    tasks=(bench_tasks.noop.task_name,),
                ),
                self.now,
            )

    def submit(self, n: int, freezer: Freezer | None = None) -> float:
        """Decode and submit ``n`` runs; CPU seconds it took (encoding them not counted).
        With ``freezer``, as the coordinator's pump does after each message."""
        took = 0.0
        for data in messages(n):
            start = time.thread_time()
            for item in parse_submits(data):
                assert isinstance(item, Submit)
                self.sched.submit(item, self.now)
            if freezer is not None:
                freezer.settle(len(self.sched.runs))
            took += time.thread_time() - start
        return took

    def collect(self) -> None:
        for worker, assignments in self.sched.take().assign.items():
            self.running += [(a, worker) for a in assignments]

    def busy_pass(self) -> float:
        self.now += 0.001
        start = time.thread_time()
        self.sched.set_max_parallel(None)
        self.sched.tick(self.now)
        self.collect()
        return time.thread_time() - start

    def place_pass(self) -> float:
        self.now += 0.001
        a, worker = self.running.pop(0)
        outcome = Outcome.model_construct(
            ref=a.ref,
            worker=worker,
            status="succeeded",
            return_value=a.args[0] if a.args else None,
            return_ref=None,
            error=None,
            started_at=self.now,
            finished_at=self.now,
        )
        start = time.thread_time()
        self.sched.outcome(outcome, self.now)
        self.sched.tick(self.now)
        self.collect()
        elapsed = time.thread_time() - start
        for run_id in self.sched.take().finished:
            self.sched.forget(run_id)
        return elapsed


def measure(queued: int, passes: int, cpus: int, freeze: bool = False) -> Row:
    before = rss()
    bench = Bench(cpus)
    with FullCollections() as full, contextlib.ExitStack() as stack:
        freezer = stack.enter_context(Freezer()) if freeze else None
        took = bench.submit(queued, freezer)
    grown = rss() - before
    bench.sched.tick(bench.now)
    bench.collect()
    gc.disable()
    try:
        busy = [bench.busy_pass() for _ in range(passes)]
        place = [bench.place_pass() for _ in range(passes)]
    finally:
        gc.enable()
    gc.unfreeze()
    return Row(queued, took / queued * 1e6, grown / queued, busy, place, full.times)


def _us(values: Sequence[float]) -> str:
    return f"{statistics.median(values) * 1e6:.1f} / {pct(values, 0.99) * 1e6:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--queued", type=int_list, default=[10_000, 100_000])
    parser.add_argument("--passes", type=positive, default=1000)
    parser.add_argument("--cpus", type=positive, default=2, help="cores of each of 2 workers")
    parser.add_argument(
        "--freeze",
        action="store_true",
        help="freeze the survivors of full collections as the coordinator does (heap.py)",
    )
    args = parser.parse_args(argv)
    rows = []
    for queued in args.queued:
        row = measure(queued, args.passes, args.cpus, args.freeze)
        rows.append(
            [
                f"{row.queued:,}",
                f"{row.submit_us:.1f}",
                f"{row.bytes_per_run:,.0f}",
                _us(row.busy),
                _us(row.place),
                f"{len(row.full)} / {sum(row.full):.2f} / {max(row.full, default=0) * 1e3:.0f}",
            ]
        )
        print(table(HEADERS, rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(HEADERS, rows))
    return 0


HEADERS = (
    "queued",
    "submit us/run",
    "RSS B/run",
    "busy pass us p50/p99",
    "place pass us p50/p99",
    "full GCs while submitting: n / s / max ms",
)


if __name__ == "__main__":
    sys.exit(main())
