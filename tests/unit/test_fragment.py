"""The default policy on GPU hosts: fragmentation-aware placement and the mix it learns.

Each scenario is one the Best-fit ranking (``binpack``, and the default policy
before it became fragmentation-aware) gets wrong: the same requests, in the
same order, leave a task without a place under bin-packing and place all of
them under the default policy.
"""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.placement.mix import CHECK_EVERY, HALF_LIFE, RequestMix
from coordinator.placement.outcome import CannotPlace, Placement, PlaceResult
from coordinator.placement.pool import ResourceAwareWorkerPool
from shared.capacity import Demand
from shared.labels import as_selectors
from shared.resources import ResourceRequest


def host(name: str, cpu: float, gpus: int, **extra: Any) -> dict[str, Any]:
    devices = [{"index": i, "model": "A100", "memory_mb": 40960} for i in range(gpus)]
    return {"name": name, "cpu": cpu, "ram_mb": 65536, "gpus": devices, **extra}


def learn(pool: ResourceAwareWorkerPool, *requests: ResourceRequest, times: int = 20) -> None:
    """Let the pool see a mix of requests (placed, then released at once)."""
    for _ in range(times):
        for request in requests:
            result = pool.place(request)
            assert isinstance(result, Placement), result
            pool.release(result.key)


def where(results: list[PlaceResult]) -> list[str]:
    return [r.worker if isinstance(r, Placement) else r.kind for r in results]


SHARE = ResourceRequest(cpu=4, gpus=0.5)
WHOLE = ResourceRequest(cpu=4, gpus=1)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("binpack", ["small", "big", "big", "big", "busy"]),
        ("hybrid", ["big", "big", "small", "big", "big"]),
    ],
)
def test_a_share_leaves_the_cores_a_whole_gpu_needs(policy: str, expected: list[str]) -> None:
    """The issue's case: best fit puts a share on the small host, whose other half GPU
    then has no cores; the last whole-GPU task finds no host."""
    pool = ResourceAwareWorkerPool([host("small", 4, 1), host("big", 16, 3)], policy=policy)
    learn(pool, SHARE, WHOLE)
    assert where([pool.place(r) for r in (SHARE, SHARE, WHOLE, WHOLE, WHOLE)]) == expected


def on(role: str, **fields: Any) -> ResourceRequest:
    return ResourceRequest(required=as_selectors([f"role={role}"]), **fields)


@pytest.mark.parametrize(
    ("policy", "expected"), [("binpack", ["partly", "busy"]), ("hybrid", ["taken", "partly"])]
)
def test_cpu_work_goes_where_the_gpus_are_taken(policy: str, expected: list[str]) -> None:
    """CPU-only work that must land on a GPU host takes the cores of one whose GPUs are all
    taken, not the last cores beside a free share that the mix's tasks could still use."""
    hosts = [host(r, 96, 8, labels={"role": r}) for r in ("taken", "partly")]
    pool = ResourceAwareWorkerPool(hosts, policy=policy)
    small_share = ResourceRequest(cpu=4, gpus=0.2)
    learn(pool, small_share)
    for _ in range(8):
        assert isinstance(pool.place(on("taken", cpu=7, gpus=1)), Placement)
    for _ in range(7):
        assert isinstance(pool.place(on("partly", cpu=12, gpus=1)), Placement)
    assert isinstance(pool.place(on("partly", cpu=2, gpus=0.8)), Placement)
    assert pool.usage("partly").cpu_free == 10
    results = [pool.place(ResourceRequest(cpu=8)), pool.place(small_share)]
    assert where(results) == expected


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("binpack", ["lean", "rich", "rich", "busy", "busy"]),
        ("hybrid", ["rich", "lean", "lean", "rich", "rich"]),
    ],
)
def test_cpu_work_prefers_a_host_rich_in_cores(policy: str, expected: list[str]) -> None:
    """Both hosts have two free GPUs; the one with few cores left keeps them for its GPUs."""
    hosts = [host("lean", 32, 8, labels={"role": "lean"}), host("rich", 104, 2)]
    pool = ResourceAwareWorkerPool(hosts, policy=policy)
    gpu_task = ResourceRequest(cpu=12, gpus=1)
    learn(pool, gpu_task)
    for _ in range(6):
        assert isinstance(pool.place(on("lean", cpu=1, gpus=1)), Placement)
    results = [pool.place(ResourceRequest(cpu=16)), *(pool.place(gpu_task) for _ in range(4))]
    assert where(results) == expected


def test_a_share_keeps_the_device_only_it_and_its_kind_can_use() -> None:
    """A share that fits on any device leaves the big-memory device to requests needing it."""
    devices = [
        {"index": 0, "model": "A100", "memory_mb": 40960},
        {"index": 1, "model": "A100", "memory_mb": 81920},
    ]
    pool = ResourceAwareWorkerPool([{"name": "g", "cpu": 8, "gpus": devices}])
    big = ResourceRequest(cpu=1, gpus=0.25, gpu_mem_mb=50000)
    learn(pool, big)
    first = pool.place(big)
    assert isinstance(first, Placement)
    assert first.gpu_devices == (1,)
    any_device = pool.place(ResourceRequest(cpu=1, gpus=0.25))
    assert isinstance(any_device, Placement)
    assert any_device.gpu_devices == (0,)
    for _ in range(3):
        assert isinstance(pool.place(big), Placement)


def test_busy_and_infeasible_answers_are_those_of_every_policy() -> None:
    pool = ResourceAwareWorkerPool([host("a", 8, 2), host("b", 8, 1)])
    learn(pool, WHOLE)
    for _ in range(3):
        assert isinstance(pool.place(WHOLE), Placement)
    kinds = {"busy": WHOLE, "infeasible": ResourceRequest(cpu=4, gpus=4)}
    for kind, request in kinds.items():
        answers = [pool.place(request, policy=p) for p in ("hybrid", "binpack", "spread")]
        assert all(isinstance(a, CannotPlace) and a.kind == kind for a in answers)
        assert answers[0] == answers[1] == answers[2]


# -- the mix ------------------------------------------------------------------------


def demand(**fields: Any) -> Demand:
    return Demand.of(ResourceRequest(**fields))


def test_a_busy_request_counts_once_however_often_it_is_tried() -> None:
    mix = RequestMix()
    a, b = demand(cpu=1, gpus=0.5), demand(cpu=1, gpus=1)
    mix.record(a, "k1", placed=True)
    for _ in range(50):
        mix.record(b, "k2", placed=False)
    mix.record(b, "k2", placed=True)
    assert mix.shares() == {
        (1000, 0, 500, frozenset(), 0): pytest.approx(0.5, rel=1e-3),
        (1000, 1, 0, frozenset(), 0): pytest.approx(0.5, rel=1e-3),
    }


def test_cpu_only_requests_are_not_part_of_the_mix() -> None:
    mix = RequestMix()
    mix.record(demand(cpu=4), 1, placed=True)
    assert mix.shares() == {}


def test_requests_a_half_life_old_weigh_half() -> None:
    mix = RequestMix()
    for key in range(HALF_LIFE):
        mix.record(demand(cpu=1, gpus=0.5), key, placed=True)
    for key in range(HALF_LIFE, 2 * HALF_LIFE):
        mix.record(demand(cpu=1, gpus=1), key, placed=True)
    assert mix.shares() == {
        (1000, 0, 500, frozenset(), 0): pytest.approx(1 / 3, rel=1e-3),
        (1000, 1, 0, frozenset(), 0): pytest.approx(2 / 3, rel=1e-3),
    }


def test_the_table_follows_the_mix_only_when_it_has_moved() -> None:
    mix = RequestMix()
    share, whole = demand(cpu=1, gpus=0.5), demand(cpu=2, gpus=1, ram_mb=1024)
    mix.record(share, 0, placed=True)
    first = mix.table
    assert first.shapes == (((1000, 0, 0, 500, frozenset(), 0), 1.0),)
    for key in range(1, CHECK_EVERY):
        mix.record(share, key, placed=True)
    assert mix.table is first  # the same mix: the same table, caches stay valid
    for key in range(CHECK_EVERY, 3 * CHECK_EVERY):
        mix.record(whole, key, placed=True)
    assert mix.table.version > first.version
    assert dict(mix.table.shapes)[(2000, 1024, 1, 0, frozenset(), 0)] > 0.5


def test_the_example_shows_the_difference(capsys: pytest.CaptureFixture[str]) -> None:
    from examples import gpu_fragmentation

    gpu_fragmentation.main()
    out = capsys.readouterr().out
    assert "binpack:        small[0], big[0], big[1], big[2], busy" in out
    assert "default policy: big[0], big[0], small[0], big[1], big[2]" in out
