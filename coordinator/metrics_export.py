"""The coordinator's Prometheus page (``fleet coordinator --metrics-port``).

Read when Prometheus scrapes, on the coordinator's event loop (``shared.metrics.serve``):
the scheduler of the term this process serves, if it leads (a standby shows only that it
stands by and its totals), the pool's counted answers, and ``metrics.COUNTS``. Nothing here
runs on the hot path; a scrape costs a walk over the workers, the queue and the runs in
memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from coordinator.metrics import COUNTS, PassCounts
from shared.metrics import counter, gauge, histogram, labelled

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from coordinator.placement.pool import ResourceAwareWorkerPool
    from coordinator.scheduling.machine import Scheduler
    from coordinator.scheduling.state import WorkerInfo
    from coordinator.service import Coordinator

Series = dict[tuple[str, ...], float]


class PoolTotals:
    """The pool's answers since this process started: a new term has a new pool, whose
    counts start at zero, so what the previous pools counted is carried over."""

    def __init__(self) -> None:
        self._pool: ResourceAwareWorkerPool | None = None
        self._base_placed = 0
        self._base_answers: Counter[tuple[str, str]] = Counter()

    def read(self, pool: ResourceAwareWorkerPool | None) -> tuple[int, Counter[tuple[str, str]]]:
        if pool is not self._pool:
            if self._pool is not None:
                self._base_placed += self._pool.placed
                self._base_answers.update(self._pool.answers)
            self._pool = pool
        if pool is None:
            return self._base_placed, Counter(self._base_answers)
        return self._base_placed + pool.placed, self._base_answers + pool.answers


class CoordinatorMetrics:
    """Every family of the page; ``current`` gives the serving term's coordinator (None
    while this process stands by)."""

    def __init__(
        self, current: Callable[[], Coordinator | None], counts: PassCounts = COUNTS
    ) -> None:
        self._current = current
        self._counts = counts
        self._pool = PoolTotals()

    def collect(self) -> Iterator[Metric]:
        coordinator = self._current()
        sched = None if coordinator is None else coordinator.scheduler
        yield gauge(
            "fleet_leader",
            "1 while this coordinator leads the fleet",
            [],
            {(): 0.0 if sched is None else 1.0},
        )
        yield from self._totals(None if sched is None else sched.pool)
        if coordinator is None or sched is None:
            return
        yield gauge(
            "fleet_term", "The leader term this coordinator serves", [], {(): coordinator.term}
        )
        yield counter(
            "fleet_dropped_messages",
            "Messages dropped as malformed, unauthorised or unappliable (this term)",
            [],
            {(): coordinator.dropped},
        )
        yield from scheduler_families(sched)

    def _totals(self, pool: ResourceAwareWorkerPool | None) -> Iterator[Metric]:
        counts = self._counts
        placed, answers = self._pool.read(pool)
        yield counter(
            "fleet_placements", "Nodes placed on a worker (rate: placements/s)", [], {(): placed}
        )
        yield counter(
            "fleet_placement_answers",
            "Busy and infeasible answers of the pool, by kind and by each dimension named",
            ["kind", "reason"],
            {key: float(n) for key, n in answers.items()},
        )
        yield histogram(
            "fleet_scheduling_pass_seconds",
            "Time of one pump pass: apply what arrived, schedule, send",
            [],
            {(): counts.passes},
        )
        yield counter(
            "fleet_runs_finished", "Runs ended, by status", ["status"], labelled(counts.runs)
        )
        yield counter(
            "fleet_nodes_finished",
            "Nodes of the runs ended, by status",
            ["status"],
            labelled(counts.nodes),
        )
        yield counter(
            "fleet_system_retries",
            "Re-placements after a lost worker, of the nodes of the runs ended",
            [],
            {(): counts.system_retries},
        )


def scheduler_families(sched: Scheduler) -> Iterator[Metric]:
    """The states a scrape reads from the scheduler."""
    yield gauge(
        "fleet_queue_depth",
        "Ready nodes waiting for capacity, by priority",
        ["priority"],
        labelled(_queue_by_priority(sched)),
    )
    yield gauge(
        "fleet_waiting_nodes", "Ready nodes by why they wait", ["why"], labelled(_waiting(sched))
    )
    yield gauge("fleet_in_flight", "Attempts placed or running", [], {(): sched.in_flight})
    yield gauge("fleet_workers", "Workers by state", ["state"], labelled(_workers_by_state(sched)))
    runs, nodes = _runs_and_nodes(sched)
    yield gauge(
        "fleet_runs", "Runs in the coordinator's memory, by status", ["status"], labelled(runs)
    )
    yield gauge("fleet_nodes", "Nodes of the running runs, by status", ["status"], labelled(nodes))
    yield from capacity_families(sched)


def capacity_families(sched: Scheduler) -> Iterator[Metric]:
    """Capacity and reservations per worker and dimension, and per GPU device."""
    total: Series = {}
    reserved: Series = {}
    gpu: Series = {}
    holds: Series = {}
    for info in sched.workers.values():
        if info.draining or info.name not in sched.pool:
            continue
        u = sched.pool.usage(info.name)
        name = info.name
        amounts = {"cpu": (u.cpu, u.cpu_reserved), "ram_mb": (u.ram_mb, u.ram_reserved_mb)}
        amounts |= {k: (v, v - u.resources_free.get(k, 0.0)) for k, v in u.resources.items()}
        for dimension, (cap, used) in amounts.items():
            total[(name, dimension)] = float(cap)
            reserved[(name, dimension)] = float(used)
        for d in u.devices:
            gpu[(name, str(d.index), d.model)] = round(1.0 - d.free, 3)
        holds[(name,)] = float(u.reservations)
    yield gauge(
        "fleet_capacity",
        "Capacity advertised, per worker and dimension",
        ["worker", "dimension"],
        total,
    )
    yield gauge(
        "fleet_reserved",
        "Capacity reserved, per worker and dimension",
        ["worker", "dimension"],
        reserved,
    )
    yield gauge(
        "fleet_gpu_reserved_share",
        "Share of each GPU device reserved (0 to 1)",
        ["worker", "device", "model"],
        gpu,
    )
    yield gauge("fleet_reservations", "Reservations held, per worker", ["worker"], holds)


def _queue_by_priority(sched: Scheduler) -> dict[int, int]:
    """From the queue's groups (``ReadyQueue.depth``): asking each node for its priority
    would read a dormant run's submission back (``RunState.doze``)."""
    return sched._ready.depth()


def _waiting(sched: Scheduler) -> Counter[str]:
    """``busy`` or ``infeasible`` (the pool's last answer to the node), else ``queued``."""
    found: Counter[str] = Counter({"busy": 0, "infeasible": 0, "queued": 0})
    for state in sched.queued():
        why = state.reason.split(" ", 1)[0].rstrip(":")
        found[why if why in ("busy", "infeasible") else "queued"] += 1
    return found


def _workers_by_state(sched: Scheduler) -> Counter[str]:
    found: Counter[str] = Counter({"ready": 0, "draining": 0, "unknown_tasks": 0})
    for info in sched.workers.values():
        found[_state(info)] += 1
    return found


def _state(info: WorkerInfo) -> str:
    if info.draining:
        return "draining"
    return "unknown_tasks" if info.tasks is None else "ready"


def _runs_and_nodes(sched: Scheduler) -> tuple[Counter[str], Counter[str]]:
    runs: Counter[str] = Counter()
    nodes: Counter[str] = Counter()
    for run in sched.runs.values():
        runs[run.status] += 1
        if run.status == "running":
            for state in run.nodes.values():
                nodes[state.status] += 1
    return runs, nodes
