"""The optimization module: host parallelism from injected probes, pool parallelism from
synthetic worker views (and a LocalFleet), the process-wide ceiling. No NATS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from taskiq import InMemoryBroker

from taskiq_fleet import (
    ResourceRequest,
    TaskResourceProfile,
    WorkerSpec,
    WorkerView,
    optimization,
    parse_selector,
)
from taskiq_fleet.inprocess import LocalFleet
from taskiq_fleet.optimization import (
    ClusterAwareExecutor,
    HostSnapshot,
    ResourceAwareExecutor,
    cluster_optimal_parallelism,
    get_default_executor,
    get_max_parallel_tasks,
    psutil_snapshot,
    set_max_parallel_tasks,
    worker_fit,
)


@pytest.fixture(autouse=True)
def _no_global_cap() -> Iterator[None]:
    set_max_parallel_tasks(None)
    yield
    set_max_parallel_tasks(None)


def host(
    cpus: int = 8, cpu_percent: float = 0.0, total_mb: float = 16384, available_mb: float = 16384
) -> HostSnapshot:
    return HostSnapshot(cpus, cpu_percent, total_mb, available_mb)


def executor(snapshot: HostSnapshot, **kwargs: Any) -> ResourceAwareExecutor:
    return ResourceAwareExecutor(probe=lambda: snapshot, **kwargs)


# -- ResourceAwareExecutor ---------------------------------------------------------------


def test_documented_defaults() -> None:
    ex = ResourceAwareExecutor()
    assert (ex.max_cpu_percent, ex.max_memory_percent) == (80.0, 80.0)
    assert (ex.min_parallel, ex.max_parallel) == (1, 100)


def test_cpu_limited() -> None:
    # 8 cores, idle, 80% allowed -> 6.4 cores of headroom -> 12 tasks of half a core.
    ex = executor(host(cpus=8, cpu_percent=0.0))
    assert ex.get_optimal_parallelism(task_memory_estimate=100, task_cpu_estimate=0.5) == 12


def test_current_cpu_usage_reduces_headroom() -> None:
    # 8 cores at 50%: 8 * (80 - 50) / 100 = 2.4 cores -> 4 tasks of 0.5.
    ex = executor(host(cpus=8, cpu_percent=50.0))
    assert ex.get_optimal_parallelism(task_memory_estimate=100, task_cpu_estimate=0.5) == 4


def test_memory_limited() -> None:
    # 16 GB total, 8 GB available, 80% allowed: 8192 - 16384 * 0.2 = 4915.2 MB -> 9 x 512 MB.
    ex = executor(host(cpus=64, total_mb=16384, available_mb=8192))
    assert ex.get_optimal_parallelism(task_memory_estimate=512, task_cpu_estimate=0.5) == 9


def test_smaller_limit_wins_and_max_parallel_caps() -> None:
    ex = executor(host(cpus=8), max_parallel=5)
    assert ex.get_optimal_parallelism(task_memory_estimate=1, task_cpu_estimate=0.01) == 5


def test_overloaded_host_gives_min_parallel() -> None:
    ex = executor(host(cpus=8, cpu_percent=95.0), min_parallel=2)
    assert ex.get_optimal_parallelism(task_memory_estimate=10, task_cpu_estimate=1.0) == 2
    full = executor(host(total_mb=1000, available_mb=100))
    assert full.get_optimal_parallelism(task_memory_estimate=10, task_cpu_estimate=0) == 1


def test_zero_estimates_set_no_limit() -> None:
    ex = executor(host(cpus=1, cpu_percent=100.0, available_mb=0), max_parallel=7)
    assert ex.get_optimal_parallelism(task_memory_estimate=0, task_cpu_estimate=0.0) == 7


def test_unreadable_host_falls_back_to_min_parallel() -> None:
    def broken() -> HostSnapshot:
        raise OSError("no /proc")

    ex = ResourceAwareExecutor(min_parallel=3, probe=broken)
    assert ex.get_optimal_parallelism(task_memory_estimate=1, task_cpu_estimate=0.1) == 3


def test_profile_io_bound_counts_a_quarter_of_its_cores() -> None:
    ex = executor(host(cpus=8))
    cpu_bound = TaskResourceProfile(estimated_memory_mb=10, estimated_cpu_cores=1.0)
    io_bound = TaskResourceProfile(estimated_memory_mb=10, estimated_cpu_cores=1.0, io_bound=True)
    assert ex.for_profile(cpu_bound) == 6
    assert ex.for_profile(io_bound) == 25  # 6.4 / 0.25


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_cpu_percent": 0},
        {"max_memory_percent": 101},
        {"min_parallel": 0},
        {"min_parallel": 5, "max_parallel": 4},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        ResourceAwareExecutor(**kwargs)


def test_negative_estimates_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        executor(host()).get_optimal_parallelism(task_memory_estimate=-1, task_cpu_estimate=1)


def test_psutil_probe_reads_the_host() -> None:
    snap = psutil_snapshot(cpu_interval=None)
    assert snap.cpu_count >= 1
    assert 0 <= snap.cpu_percent <= 100
    assert 0 < snap.available_memory_mb <= snap.total_memory_mb
    real = ResourceAwareExecutor().get_optimal_parallelism(
        task_memory_estimate=1, task_cpu_estimate=0.001
    )
    assert 1 <= real <= 100


def test_default_executor_is_a_singleton() -> None:
    assert get_default_executor() is get_default_executor()
    assert isinstance(get_default_executor(), ResourceAwareExecutor)


# -- the process-wide ceiling ------------------------------------------------------------


def test_global_ceiling_is_stored_and_applied() -> None:
    assert get_max_parallel_tasks() is None
    set_max_parallel_tasks(3)
    assert get_max_parallel_tasks() == 3
    ex = executor(host(cpus=64))
    assert ex.get_optimal_parallelism(task_memory_estimate=1, task_cpu_estimate=0.1) == 3
    # The ceiling wins over an executor's floor: "never exceed".
    assert executor(host(), min_parallel=5).get_optimal_parallelism(1, 0.1) == 3
    set_max_parallel_tasks(None)
    assert get_max_parallel_tasks() is None


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_global_ceiling_refuses_non_positive(bad: Any) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        set_max_parallel_tasks(bad)


def test_module_documents_the_cluster_gap() -> None:
    assert "--max-parallel" in (optimization.set_max_parallel_tasks.__doc__ or "")


# -- ClusterAwareExecutor ----------------------------------------------------------------


def view(
    name: str,
    cpu: float,
    ram_mb: float,
    *,
    gpus: list[dict[str, Any]] | None = None,
    gpu_free: dict[int, float] | None = None,
    labels: dict[str, str] | None = None,
    custom: dict[str, float] | None = None,
    **state: Any,
) -> WorkerView:
    """A worker whose free capacity is what is given (its totals are twice that)."""
    spec = WorkerSpec(
        name=name,
        cpu=cpu * 2,
        ram_mb=int(ram_mb * 2),
        gpus=tuple(gpus or ()),
        labels=labels or {},
        resources={k: v * 2 for k, v in (custom or {}).items()},
    )
    free = {"cpu": cpu, "ram_mb": ram_mb, **(custom or {})}
    return WorkerView(spec=spec, free=free, gpu_free=gpu_free or {}, **state)


def test_sums_fits_over_workers() -> None:
    pool = [view("a", cpu=4, ram_mb=8192), view("b", cpu=2, ram_mb=1024)]
    task = TaskResourceProfile(estimated_memory_mb=512, estimated_cpu_cores=1.0)
    fit = ClusterAwareExecutor().fit(pool, task)
    # a: min(4/1, 8192/512=16) = 4; b: min(2, 1024/512=2) = 2.
    assert dict(fit.per_worker) == {"a": 4, "b": 2}
    assert fit.parallelism == 6
    assert fit.raw_total == 6


def test_fractional_cpu_is_exact() -> None:
    pool = [view("a", cpu=0.9, ram_mb=100)]
    assert worker_fit(pool[0], ResourceRequest(cpu=0.3)) == 3  # no 0.9/0.3 = 2.999 slip


def test_io_bound_profile_packs_more() -> None:
    pool = [view("a", cpu=2, ram_mb=10_000)]
    io = TaskResourceProfile(estimated_memory_mb=100, estimated_cpu_cores=1.0, io_bound=True)
    assert ClusterAwareExecutor().get_optimal_parallelism(pool, io) == 8


def test_busy_draining_unhealthy_and_unlabelled_workers_take_none() -> None:
    pool = [
        view("idle", cpu=2, ram_mb=1000, labels={"zone": "eu"}),
        view("full", cpu=0, ram_mb=0, labels={"zone": "eu"}),
        view("drain", cpu=8, ram_mb=8000, labels={"zone": "eu"}, draining=True),
        view("sick", cpu=8, ram_mb=8000, labels={"zone": "eu"}, healthy=False),
        view("us", cpu=8, ram_mb=8000, labels={"zone": "us"}),
    ]
    request = ResourceRequest(cpu=1, required=(parse_selector("zone=eu"),))
    fit = ClusterAwareExecutor().fit(pool, request)
    assert dict(fit.per_worker) == {"idle": 2}
    assert fit.parallelism == 2


def test_nothing_fits_gives_min_parallel() -> None:
    pool = [view("a", cpu=0.5, ram_mb=100)]
    ex = ClusterAwareExecutor(min_parallel=1)
    assert ex.get_optimal_parallelism(pool, ResourceRequest(cpu=1)) == 1
    assert ex.get_optimal_parallelism([], ResourceRequest(cpu=1)) == 1


def test_whole_gpus_need_entirely_free_eligible_devices() -> None:
    devices = [
        {"index": 0, "model": "A100", "memory_mb": 40_000},
        {"index": 1, "model": "A100", "memory_mb": 40_000},
        {"index": 2, "model": "A100", "memory_mb": 40_000},
        {"index": 3, "model": "T4", "memory_mb": 16_000},
    ]
    gpu = view("g", cpu=64, ram_mb=100_000, gpus=devices, gpu_free={0: 1.0, 1: 1.0, 2: 0.5, 3: 1.0})
    cpu_only = view("c", cpu=64, ram_mb=100_000)
    pool = [gpu, cpu_only]
    ex = ClusterAwareExecutor()
    assert ex.get_optimal_parallelism(pool, ResourceRequest(cpu=1, gpus=1)) == 3
    assert ex.get_optimal_parallelism(pool, ResourceRequest(cpu=1, gpus=2)) == 1
    a100 = ResourceRequest(cpu=1, gpus=1, gpu_models=("A100",))
    assert ex.fit(pool, a100).per_worker == {"g": 2}
    big = ResourceRequest(cpu=1, gpus=1, gpu_mem_mb=20_000)
    assert ex.get_optimal_parallelism(pool, big) == 2
    # A GPU task's CPU need still counts.
    assert ex.get_optimal_parallelism([gpu], ResourceRequest(cpu=40, gpus=1)) == 1


def test_gpu_shares_pack_per_device() -> None:
    devices = [{"index": 0, "model": "L4"}, {"index": 1, "model": "L4"}]
    pool = [view("g", cpu=16, ram_mb=10_000, gpus=devices, gpu_free={0: 1.0, 1: 0.6})]
    # 1.0 / 0.25 = 4 and 0.6 / 0.25 = 2 (shares never straddle devices).
    assert ClusterAwareExecutor().get_optimal_parallelism(pool, ResourceRequest(gpus=0.25)) == 6


def test_custom_resources_limit() -> None:
    pool = [view("a", cpu=16, ram_mb=10_000, custom={"licence": 3})]
    request = ResourceRequest(cpu=1, resources={"licence": 1})
    assert ClusterAwareExecutor().get_optimal_parallelism(pool, request) == 3
    other = [view("b", cpu=16, ram_mb=10_000)]
    assert ClusterAwareExecutor().fit(other, request).per_worker == {}


def test_bounds_and_unbounded_requests() -> None:
    pool = [view("a", cpu=64, ram_mb=100_000)]
    ex = ClusterAwareExecutor(min_parallel=2, max_parallel=10)
    assert ex.get_optimal_parallelism(pool, ResourceRequest(cpu=1)) == 10
    nothing = ResourceRequest(cpu=0)
    fit = ex.fit(pool, nothing)
    assert fit.unbounded
    assert fit.raw_total is None
    assert fit.parallelism == 10
    set_max_parallel_tasks(4)
    assert ex.get_optimal_parallelism(pool, ResourceRequest(cpu=1)) == 4


class FakeClient:
    """Stands in for CoordinatorClient: ``workers()`` is a coroutine."""

    def __init__(self, workers: list[WorkerView]) -> None:
        self._workers = workers

    async def workers(self) -> list[WorkerView]:
        return self._workers


async def test_async_helper_with_a_client() -> None:
    client = FakeClient([view("a", cpu=4, ram_mb=4096), view("b", cpu=4, ram_mb=1024)])
    task = TaskResourceProfile(estimated_memory_mb=1024, estimated_cpu_cores=1.0)
    assert await cluster_optimal_parallelism(client, task) == 5
    assert await cluster_optimal_parallelism(client, task, max_parallel=3) == 3


async def test_async_helper_with_a_local_fleet() -> None:
    fleet = LocalFleet(
        InMemoryBroker(),
        [
            {"name": "big", "cpu_cores": 8, "ram_gb": 16},
            {"name": "gpu", "cpu_cores": 4, "ram_gb": 8, "gpus": 2},
        ],
    )
    async with fleet:
        cpu_task = TaskResourceProfile(estimated_memory_mb=2048, estimated_cpu_cores=2.0)
        assert await cluster_optimal_parallelism(fleet, cpu_task) == 6  # 4 + 2
        gpu_task = ResourceRequest(cpu=1, gpus=1)
        assert await ClusterAwareExecutor().from_client(fleet, gpu_task) == 2
