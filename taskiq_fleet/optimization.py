"""Resource-aware parallelism: the documents' optimization module, and a cluster-wide variant.

``ResourceAwareExecutor`` answers the documents' question for the local host:
how many task instances of a given size fit in the CPU and memory headroom
left under ``max_cpu_percent`` / ``max_memory_percent`` right now.  The host is
read through psutil by default; a probe can be injected (tests, or a caller
that already samples the host).

``ClusterAwareExecutor`` goes beyond the documents: it asks the same question
of the whole pool, from the free capacity the coordinator reports for each
worker (``CoordinatorClient.workers()`` or ``LocalFleet.workers()``), with the
pool's own rules: required labels, whole or shared GPUs, GPU model and memory
constraints, custom resources.

``set_max_parallel_tasks`` stores a process-wide ceiling that both executors
respect, and is enforced where tasks run: every started ``FleetBroker`` sends it to
the coordinator (its ``limit`` control verb, as ``--max-parallel`` at start), and
in-process fleets apply it at once.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import psutil  # type: ignore[import-untyped, unused-ignore]

from shared.capacity import Capacity, Demand
from shared.resources import MILLI, ResourceRequest
from shared.wire.runs import WorkerView
from taskiq_fleet.limits import get_max_parallel_tasks, set_max_parallel_tasks
from taskiq_fleet.profiles import TaskResourceProfile

__all__ = [
    "DEFAULT_MAX_PARALLEL",
    "ClusterAwareExecutor",
    "ClusterFit",
    "HostSnapshot",
    "ResourceAwareExecutor",
    "TaskResourceProfile",
    "WorkerSource",
    "cluster_optimal_parallelism",
    "get_default_executor",
    "get_max_parallel_tasks",
    "psutil_snapshot",
    "set_max_parallel_tasks",
]

DEFAULT_MAX_PARALLEL = 100
"""The ceiling the Optimization API's constructor example shows."""

MB = 1024 * 1024


# -- the host ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    """What the executor needs to know about the host at one moment."""

    cpu_count: int
    """Logical CPUs."""
    cpu_percent: float
    """Current utilisation of all CPUs together, 0-100."""
    total_memory_mb: float
    available_memory_mb: float
    """Memory that can be given to new processes without swapping (psutil's ``available``)."""


def psutil_snapshot(cpu_interval: float | None = 0.1) -> HostSnapshot:
    """Sample the host with psutil.

    ``cpu_interval`` is how long ``psutil.cpu_percent`` measures (blocking); ``None``
    compares with the previous call instead, which is meaningless on the first one.
    """
    memory = psutil.virtual_memory()
    return HostSnapshot(
        cpu_count=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        cpu_percent=float(psutil.cpu_percent(interval=cpu_interval)),
        total_memory_mb=memory.total / MB,
        available_memory_mb=memory.available / MB,
    )


HostProbe = Callable[[], HostSnapshot]


# -- the process-wide ceiling ------------------------------------------------------------


def _check_bounds(min_parallel: int, max_parallel: int) -> None:
    if min_parallel < 1:
        raise ValueError(f"min_parallel must be at least 1, got {min_parallel}")
    if max_parallel < min_parallel:
        raise ValueError(f"max_parallel={max_parallel} is below min_parallel={min_parallel}")


def _clamp(value: int, min_parallel: int, max_parallel: int) -> int:
    """Bound by the executor's limits; the process-wide ceiling wins over the floor."""
    bounded = max(min_parallel, min(value, max_parallel))
    ceiling = get_max_parallel_tasks()
    return bounded if ceiling is None else min(bounded, ceiling)


def _check_percent(name: str, value: float) -> None:
    if not 0 < value <= 100:
        raise ValueError(f"{name} must be in (0, 100], got {value}")


# -- the documents' executor -------------------------------------------------------------


class ResourceAwareExecutor:
    """How many tasks of a given size the local host can run at once.

    With ``c`` logical CPUs at ``u``% utilisation, the CPU headroom is
    ``c * (max_cpu_percent - u) / 100`` cores; with ``T`` MB of memory of which
    ``A`` are available, the memory headroom is ``A - T * (1 - max_memory_percent / 100)``
    MB (what can be used before usage passes ``max_memory_percent``).  Each headroom
    divided by the per-task estimate, rounded down, is a limit; the answer is the
    smaller one, bounded by ``min_parallel`` and ``max_parallel`` (and the
    process-wide :func:`set_max_parallel_tasks` ceiling).  An estimate of 0 sets
    no limit in its dimension.  If the host cannot be read the answer is
    ``min_parallel``, the safe side.
    """

    def __init__(
        self,
        max_cpu_percent: float = 80.0,
        max_memory_percent: float = 80.0,
        min_parallel: int = 1,
        max_parallel: int = DEFAULT_MAX_PARALLEL,
        *,
        probe: HostProbe | None = None,
    ) -> None:
        _check_percent("max_cpu_percent", max_cpu_percent)
        _check_percent("max_memory_percent", max_memory_percent)
        _check_bounds(min_parallel, max_parallel)
        self.max_cpu_percent = max_cpu_percent
        self.max_memory_percent = max_memory_percent
        self.min_parallel = min_parallel
        self.max_parallel = max_parallel
        self.probe: HostProbe = probe or psutil_snapshot

    def cpu_headroom(self, host: HostSnapshot) -> float:
        """Cores usable before utilisation passes ``max_cpu_percent``."""
        return max(0.0, host.cpu_count * (self.max_cpu_percent - host.cpu_percent) / 100)

    def memory_headroom_mb(self, host: HostSnapshot) -> float:
        """MB usable before memory usage passes ``max_memory_percent``."""
        reserve = host.total_memory_mb * (1 - self.max_memory_percent / 100)
        return max(0.0, host.available_memory_mb - reserve)

    def get_optimal_parallelism(
        self, task_memory_estimate: int = 0, task_cpu_estimate: float = 0.0
    ) -> int:
        """Concurrent tasks that fit: memory in MB and CPU in cores per task."""
        if task_memory_estimate < 0 or task_cpu_estimate < 0:
            raise ValueError(
                f"estimates must not be negative, got memory={task_memory_estimate} MB, "
                f"cpu={task_cpu_estimate} cores"
            )
        try:
            host = self.probe()
        except (OSError, RuntimeError):
            return _clamp(self.min_parallel, self.min_parallel, self.max_parallel)
        fits = self.max_parallel
        if task_cpu_estimate > 0:
            fits = min(fits, math.floor(self.cpu_headroom(host) / task_cpu_estimate))
        if task_memory_estimate > 0:
            fits = min(fits, math.floor(self.memory_headroom_mb(host) / task_memory_estimate))
        return _clamp(fits, self.min_parallel, self.max_parallel)

    def for_profile(self, profile: TaskResourceProfile) -> int:
        """The same for a profile; an I/O-bound one counts a quarter of its cores,
        as the pool reserves them."""
        request = profile.to_request()
        return self.get_optimal_parallelism(request.ram_mb, request.cpu)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_cpu_percent={self.max_cpu_percent}, "
            f"max_memory_percent={self.max_memory_percent}, "
            f"min_parallel={self.min_parallel}, max_parallel={self.max_parallel})"
        )


_default: ResourceAwareExecutor | None = None
_lock = threading.Lock()


def get_default_executor() -> ResourceAwareExecutor:
    """The process's one ``ResourceAwareExecutor`` with default settings."""
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                _default = ResourceAwareExecutor()
    return _default


# -- the cluster -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterFit:
    """How many copies of one request fit on the pool now, worker by worker."""

    per_worker: Mapping[str, int]
    """Copies that fit on each worker that could take any; ``-1`` means unbounded
    (the request asks for nothing that worker counts)."""
    parallelism: int
    """The total, bounded by the executor's limits."""

    @property
    def unbounded(self) -> bool:
        return any(n < 0 for n in self.per_worker.values())

    @property
    def raw_total(self) -> int | None:
        """The sum before bounds; ``None`` when some worker sets no limit."""
        return None if self.unbounded else sum(self.per_worker.values())


def _milli(amount: float) -> int:
    return round(amount * MILLI)


def _copies(free: int, need: int) -> int | None:
    """Whole copies of ``need`` in ``free``; ``None`` if nothing is needed."""
    return max(0, free) // need if need > 0 else None


def _gpu_copies(worker: WorkerView, demand: Demand, cap: Capacity) -> int | None:
    """Copies by GPU: a share packs onto each eligible device; whole ones need free devices.
    Eligibility (model, memory) is the pool's own ``Capacity.device_ok``."""
    if not demand.wants_gpu:
        return None
    frees = [
        _milli(worker.gpu_free.get(index, 0.0))
        for slot, index in enumerate(cap.gpu_index)
        if cap.device_ok(slot, demand)
    ]
    if demand.gpu_share:
        return sum(max(0, free) // demand.gpu_share for free in frees)
    return sum(1 for free in frees if free >= MILLI) // demand.gpu_whole


def worker_fit(worker: WorkerView, request: ResourceRequest) -> int | None:
    """Copies of ``request`` that fit in ``worker``'s free capacity now, in the pool's
    integer units (``shared.capacity``).

    ``None`` means no limit: the request needs nothing the worker counts.  A
    worker that is unhealthy, draining or lacks a required label takes none.
    """
    if not worker.healthy or worker.draining:
        return 0
    if not all(s.matches(worker.spec.labels) for s in request.required):
        return 0
    demand, cap = Demand.of(request), Capacity.of(worker.spec)
    limits = [
        _copies(_milli(worker.free.get("cpu", 0.0)), demand.cpu),
        _copies(round(worker.free.get("ram_mb", 0.0)), demand.ram),
        _gpu_copies(worker, demand, cap),
        *(_copies(_milli(worker.free.get(k, 0.0)), v) for k, v in demand.custom),
    ]
    bounded = [n for n in limits if n is not None]
    return min(bounded) if bounded else None


def as_request(task: TaskResourceProfile | ResourceRequest) -> ResourceRequest:
    return task.to_request() if isinstance(task, TaskResourceProfile) else task


class ClusterAwareExecutor:
    """How many tasks of a given size the whole pool can run at once, right now.

    The answer sums, over the workers, how many copies of the task fit in each
    one's free capacity (the smallest of free cpu / cpu, free RAM / RAM, free
    custom resources / amount, and the GPU count: shares packed per eligible
    device, whole GPUs from entirely free eligible devices).  Workers that are
    draining, unhealthy or lack a required label count for nothing.  The sum is
    bounded by ``min_parallel`` and ``max_parallel`` and by the process-wide
    :func:`set_max_parallel_tasks` ceiling.

    Free capacity is what the coordinator has not reserved, not what the hosts
    measure: it already excludes running tasks, so the answer is the number of
    tasks that would start at once if submitted now.  It is a snapshot; other
    clients' submissions can take the capacity before yours arrive.
    """

    def __init__(self, min_parallel: int = 1, max_parallel: int = DEFAULT_MAX_PARALLEL) -> None:
        _check_bounds(min_parallel, max_parallel)
        self.min_parallel = min_parallel
        self.max_parallel = max_parallel

    def fit(
        self, workers: Iterable[WorkerView], task: TaskResourceProfile | ResourceRequest
    ) -> ClusterFit:
        request = as_request(task)
        per_worker: dict[str, int] = {}
        for i, worker in enumerate(workers):
            n = worker_fit(worker, request)
            if n is None or n > 0:
                per_worker[worker.spec.name or f"#{i}"] = -1 if n is None else n
        counts = per_worker.values()
        total = self.max_parallel if any(n < 0 for n in counts) else sum(counts)
        return ClusterFit(per_worker, _clamp(total, self.min_parallel, self.max_parallel))

    def get_optimal_parallelism(
        self, workers: Iterable[WorkerView], task: TaskResourceProfile | ResourceRequest
    ) -> int:
        return self.fit(workers, task).parallelism

    async def from_client(
        self, client: WorkerSource, task: TaskResourceProfile | ResourceRequest
    ) -> int:
        """Ask a ``CoordinatorClient`` or a ``LocalFleet`` (``broker.connected()``)."""
        return self.get_optimal_parallelism(await client.workers(), task)


class WorkerSource(Protocol):
    """Anything listing the pool's workers: ``CoordinatorClient`` or ``LocalFleet``."""

    async def workers(self) -> list[WorkerView]: ...


async def cluster_optimal_parallelism(
    client: WorkerSource,
    task: TaskResourceProfile | ResourceRequest,
    *,
    min_parallel: int = 1,
    max_parallel: int = DEFAULT_MAX_PARALLEL,
) -> int:
    """Tasks like ``task`` that the live pool behind ``client`` can run at once now."""
    executor = ClusterAwareExecutor(min_parallel=min_parallel, max_parallel=max_parallel)
    return await executor.from_client(client, task)
