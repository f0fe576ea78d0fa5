"""ResourceAwareWorkerPool: placement, reservations and policies (coordinator/placement/pool.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest
from pydantic import ValidationError

from coordinator.placement.outcome import Candidate, CannotPlace, Placement, PlaceResult
from coordinator.placement.pool import ResourceAwareWorkerPool
from shared.labels import as_preferences, as_selectors
from shared.resources import ResourceRequest

POLICIES = ("binpack", "spread", "hybrid")


def req(
    required: Iterable[str] = (), preferred: Mapping[str, int] | None = None, **fields: Any
) -> ResourceRequest:
    return ResourceRequest(
        required=as_selectors(list(required)),
        preferred=as_preferences(preferred or {}),
        **fields,
    )


def placed(result: PlaceResult) -> Placement:
    assert isinstance(result, Placement), f"expected a placement, got {result}"
    return result


def refused(result: PlaceResult, kind: str) -> CannotPlace:
    assert isinstance(result, CannotPlace), f"expected {kind}, got {result}"
    assert result.kind == kind, str(result)
    return result


def missing_dims(candidate: Candidate) -> set[str]:
    return {r.dimension for r in candidate.missing}


def gpu_worker(name: str, indexes: Iterable[int], model: str = "A100", **extra: Any) -> dict:
    devices = [{"index": i, "model": model, "memory_mb": 40960} for i in indexes]
    return {"name": name, "cpu": 16, "ram_mb": 65536, "gpus": devices, **extra}


def snapshot(pool: ResourceAwareWorkerPool, name: str) -> tuple[Any, ...]:
    u = pool.usage(name)
    return (u.cpu_free, u.ram_free_mb, u.devices, u.resources_free, u.reservations)


# -- construction and membership -------------------------------------------------


def test_static_form_of_the_documents() -> None:
    pool = ResourceAwareWorkerPool(
        workers=[
            {"cpu_cores": 8, "ram_gb": 32, "labels": {"gpu": True}},
            {"cpu_cores": 4, "ram_gb": 16, "labels": {"gpu": False}},
        ]
    )
    assert pool.workers == ["worker-0", "worker-1"]
    assert len(pool) == 2
    assert "worker-1" in pool
    assert "worker-2" not in pool
    u0, u1 = pool.usage("worker-0"), pool.usage("worker-1")
    assert (u0.cpu, u0.cpu_free, u0.ram_mb, u0.ram_free_mb, u0.labels) == (
        8.0,
        8.0,
        32768,
        32768,
        {"gpu": "true"},
    )
    assert (u1.cpu, u1.ram_mb, u1.labels, u1.devices, u1.reservations) == (
        4.0,
        16384,
        {"gpu": "false"},
        (),
        0,
    )
    assert pool.reservations() == []


def test_required_labels_of_the_static_form() -> None:
    pool = ResourceAwareWorkerPool(
        workers=[
            {"cpu_cores": 8, "ram_gb": 32, "labels": {"gpu": True}},
            {"cpu_cores": 4, "ram_gb": 16, "labels": {"gpu": False}},
        ]
    )
    assert placed(pool.place(req(["gpu=true"], cpu=2))).worker == "worker-0"
    assert placed(pool.place(req(["gpu=false"], cpu=2))).worker == "worker-1"
    assert placed(pool.place(req(["gpu notin (true)"], cpu=1))).worker == "worker-1"
    assert placed(pool.place(req(["gpu in (true, maybe)"], cpu=1))).worker == "worker-0"


def test_add_worker_names() -> None:
    pool = ResourceAwareWorkerPool()
    assert pool.add_worker({"cpu": 2}) == "worker-0"
    assert pool.add_worker({"cpu": 2}) == "worker-1"
    assert pool.add_worker({"name": "gpu-box", "cpu": 2}) == "gpu-box"
    assert pool.workers == ["worker-0", "worker-1", "gpu-box"]


def test_add_worker_duplicate_name_refused() -> None:
    pool = ResourceAwareWorkerPool([{"name": "a", "cpu": 2}])
    with pytest.raises(ValueError, match="already in the pool"):
        pool.add_worker({"name": "a", "cpu": 4})
    assert pool.usage("a").cpu == 2.0


def test_add_worker_validates() -> None:
    pool = ResourceAwareWorkerPool()
    with pytest.raises(ValidationError, match="ram_gbs"):
        pool.add_worker({"cpu_cores": 8, "ram_gbs": 4})
    assert len(pool) == 0


def test_usage_of_unknown_worker() -> None:
    with pytest.raises(KeyError):
        ResourceAwareWorkerPool().usage("nope")


# -- policies: selection and validation ----------------------------------------


def test_unknown_policy_refused_by_pool() -> None:
    with pytest.raises(ValueError, match="unknown placement policy"):
        ResourceAwareWorkerPool(policy="tetris")


def test_unknown_policy_refused_by_place() -> None:
    pool = ResourceAwareWorkerPool([{"cpu": 4}])
    with pytest.raises(ValueError, match="unknown placement policy"):
        pool.place(req(cpu=1), policy="tetris")
    with pytest.raises(ValueError, match="unknown placement policy"):
        pool.place(req(cpu=1, policy="tetris"))
    assert pool.reservations() == []
    assert pool.usage("worker-0").cpu_free == 4.0


def test_unknown_policy_refused_even_when_infeasible() -> None:
    pool = ResourceAwareWorkerPool([{"cpu": 4}])
    with pytest.raises(ValueError, match="unknown placement policy"):
        pool.place(req(cpu=64), policy="tetris")


@pytest.mark.parametrize("name", POLICIES)
def test_pool_policy_by_name(name: str) -> None:
    assert ResourceAwareWorkerPool(policy=name).policy.name == name


def test_default_policy_is_hybrid() -> None:
    assert ResourceAwareWorkerPool().policy.name == "hybrid"


def _big_and_small(policy: str | None = None) -> ResourceAwareWorkerPool:
    # the big one first, so a tie on worker order never explains a choice of "small"
    return ResourceAwareWorkerPool(
        [{"name": "big", "cpu": 16}, {"name": "small", "cpu": 4}], policy=policy
    )


@pytest.mark.parametrize(("policy", "worker"), [("binpack", "small"), ("spread", "big")])
def test_pool_policy_chooses(policy: str, worker: str) -> None:
    assert placed(_big_and_small(policy).place(req(cpu=2))).worker == worker


def test_binpack_tightest_fit() -> None:
    pool = ResourceAwareWorkerPool(
        [{"name": "a", "cpu": 16}, {"name": "b", "cpu": 6}, {"name": "c", "cpu": 4}],
        policy="binpack",
    )
    # c is the tightest for 3 cores; 5 cores only fit a or b, b is tighter
    assert placed(pool.place(req(cpu=3))).worker == "c"
    assert placed(pool.place(req(cpu=5))).worker == "b"
    # both have one core left: the untouched a is never used for small work
    assert {placed(pool.place(req(cpu=1))).worker for _ in range(2)} == {"b", "c"}
    # a 16-core request still finds the untouched machine
    assert placed(pool.place(req(cpu=16))).worker == "a"


def test_spread_most_room() -> None:
    pool = ResourceAwareWorkerPool(
        [{"name": "a", "cpu": 8}, {"name": "b", "cpu": 8}, {"name": "c", "cpu": 8}],
        policy="spread",
    )
    workers = [placed(pool.place(req(cpu=1))).worker for _ in range(6)]
    assert sorted(workers[:3]) == ["a", "b", "c"]
    assert sorted(workers[3:]) == ["a", "b", "c"]
    assert {pool.usage(n).cpu_free for n in "abc"} == {6.0}


def test_hybrid_packs_to_half_then_spreads() -> None:
    pool = ResourceAwareWorkerPool([{"cpu": 8}, {"cpu": 8}])
    workers = [placed(pool.place(req(cpu=1))).worker for _ in range(10)]
    # fills worker-0 up to half of its cores, then worker-1 up to half ...
    assert workers[:8] == ["worker-0"] * 4 + ["worker-1"] * 4
    # ... then both are half used and the rest is spread
    assert sorted(workers[8:]) == ["worker-0", "worker-1"]
    assert pool.usage("worker-0").cpu_free == 3.0
    assert pool.usage("worker-1").cpu_free == 3.0


def _preloaded(policy: str, used_on_a: float) -> ResourceAwareWorkerPool:
    pool = ResourceAwareWorkerPool(
        [
            {"name": "a", "cpu": 8, "labels": {"host": "a"}},
            {"name": "b", "cpu": 8, "labels": {"host": "b"}},
        ],
        policy=policy,
    )
    placed(pool.place(req(["host=a"], cpu=used_on_a)))
    return pool


@pytest.mark.parametrize(
    ("policy", "used_on_a", "worker"),
    [
        ("binpack", 2, "a"),
        ("binpack", 5, "a"),
        ("spread", 2, "b"),
        ("spread", 5, "b"),
        ("hybrid", 2, "a"),  # a stays at or below half used: keep packing it
        ("hybrid", 5, "b"),  # a is past half: spread to b
    ],
)
def test_policies_on_a_partly_used_pool(policy: str, used_on_a: float, worker: str) -> None:
    pool = _preloaded(policy, used_on_a)
    assert placed(pool.place(req(cpu=1))).worker == worker


def test_hybrid_binpacks_gpu_work() -> None:
    pool = ResourceAwareWorkerPool([gpu_worker("g0", [0]), gpu_worker("g1", [0])])
    first = placed(pool.place(req(cpu=1, gpus=0.25)))
    second = placed(pool.place(req(cpu=1, gpus=0.25)))
    assert (first.worker, first.gpu_devices) == (second.worker, second.gpu_devices)


def test_spread_spreads_gpu_work() -> None:
    pool = ResourceAwareWorkerPool([gpu_worker("g0", [0]), gpu_worker("g1", [0])], policy="spread")
    first = placed(pool.place(req(cpu=1, gpus=0.25)))
    second = placed(pool.place(req(cpu=1, gpus=0.25)))
    assert {first.worker, second.worker} == {"g0", "g1"}


def test_policy_per_request_overrides_pool() -> None:
    pool = _big_and_small("binpack")
    assert placed(pool.place(req(cpu=2, policy="spread"))).worker == "big"
    assert placed(pool.place(req(cpu=2))).worker == "small"


def test_policy_per_call_overrides_request_and_pool() -> None:
    pool = _big_and_small("spread")
    assert placed(pool.place(req(cpu=2, policy="spread"), policy="binpack")).worker == "small"
    assert placed(pool.place(req(cpu=1), policy="binpack")).worker == "small"
    assert placed(pool.place(req(cpu=1, policy="binpack"), policy="spread")).worker == "big"


# -- CPU-only work and GPU hosts --------------------------------------------------


def _gpu_host_small() -> list[dict]:
    # bin-packing alone would pick the GPU host: it is the tighter fit
    return [{"name": "cpu-big", "cpu": 16}, gpu_worker("gpu-small", [0], cpu=4)]


def _gpu_host_big() -> list[dict]:
    # spreading alone would pick the GPU host: it has more room
    return [{"name": "cpu-small", "cpu": 4}, gpu_worker("gpu-big", [0], cpu=32)]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(
    ("workers", "cpu_host"),
    [(_gpu_host_small(), "cpu-big"), (_gpu_host_big(), "cpu-small")],
)
def test_cpu_only_work_avoids_gpu_hosts(policy: str, workers: list[dict], cpu_host: str) -> None:
    pool = ResourceAwareWorkerPool(workers, policy=policy)
    assert placed(pool.place(req(cpu=2))).worker == cpu_host
    assert placed(pool.place(req(cpu=1), policy=policy)).worker == cpu_host


@pytest.mark.parametrize("policy", POLICIES)
def test_cpu_only_work_falls_back_to_gpu_host_when_too_big(policy: str) -> None:
    pool = ResourceAwareWorkerPool(_gpu_host_big(), policy=policy)
    p = placed(pool.place(req(cpu=8)))
    assert (p.worker, p.gpu_devices) == ("gpu-big", ())
    assert pool.usage("gpu-big").devices[0].free == 1.0


@pytest.mark.parametrize("policy", POLICIES)
def test_cpu_only_work_falls_back_to_gpu_host_when_others_busy(policy: str) -> None:
    pool = ResourceAwareWorkerPool(_gpu_host_big(), policy=policy)
    assert placed(pool.place(req(cpu=4))).worker == "cpu-small"
    assert placed(pool.place(req(cpu=1))).worker == "gpu-big"


@pytest.mark.parametrize("policy", POLICIES)
def test_gpu_work_goes_to_gpu_host(policy: str) -> None:
    pool = ResourceAwareWorkerPool(_gpu_host_small(), policy=policy)
    p = placed(pool.place(req(cpu=1, gpus=1)))
    assert (p.worker, p.gpu_devices) == ("gpu-small", (0,))


# -- preferred labels ---------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_preferred_label_beats_policy_score(policy: str) -> None:
    pool = ResourceAwareWorkerPool(
        [
            {"name": "us-big", "cpu": 16, "labels": {"zone": "us"}},
            {"name": "eu-small", "cpu": 4, "labels": {"zone": "eu"}},
            {"name": "us-small", "cpu": 4, "labels": {"zone": "us"}},
            {"name": "eu-big", "cpu": 16, "labels": {"zone": "eu"}},
        ],
        policy=policy,
    )
    assert placed(pool.place(req(cpu=1, preferred={"zone=eu": 1}))).worker.startswith("eu-")
    assert placed(pool.place(req(cpu=1, preferred={"zone=us": 1}))).worker.startswith("us-")


@pytest.mark.parametrize(
    ("preferred", "worker"),
    [
        ({"zone=eu": 3, "ssd": 5}, "ssd"),
        ({"zone=eu": 6, "ssd": 5}, "eu"),
        ({"zone=eu": 3, "ssd": 5, "tier=gold": 10}, "gold"),
        ({"zone in (eu, us)": 5, "tier=gold": 1}, "gold"),  # 6 beats 5
        ({"ssd": 1, "zone=us": 1}, "ssd"),  # tie on weight: binpack picks the tighter
        ({"zone!=eu": 1}, "ssd"),  # not_in matches workers without the key
        ({"nothing=here": 50}, "eu"),  # no preference matches: binpack alone decides
    ],
)
def test_preferred_weights(preferred: dict[str, int], worker: str) -> None:
    pool = ResourceAwareWorkerPool(
        [
            {"name": "gold", "cpu": 16, "labels": {"zone": "us", "tier": "gold"}},
            {"name": "ssd", "cpu": 8, "labels": {"ssd": True}},
            {"name": "eu", "cpu": 4, "labels": {"zone": "eu"}},
        ],
        policy="binpack",
    )
    assert placed(pool.place(req(cpu=1, preferred=preferred))).worker == worker


def test_preferred_worker_busy_falls_back() -> None:
    pool = ResourceAwareWorkerPool(
        [{"name": "eu", "cpu": 2, "labels": {"zone": "eu"}}, {"name": "us", "cpu": 2}]
    )
    request = req(cpu=1, preferred={"zone=eu": 10})
    assert [placed(pool.place(request)).worker for _ in range(4)] == ["eu", "eu", "us", "us"]
    refused(pool.place(request), "busy")


@pytest.mark.parametrize("preferred", [{"hostname=h2": 10}, {"unique.rack=r2": 10}])
def test_preferred_per_host_label(preferred: dict[str, int]) -> None:
    pool = ResourceAwareWorkerPool(
        [
            {"name": "h1", "cpu": 4, "labels": {"hostname": "h1", "unique.rack": "r1"}},
            {"name": "h2", "cpu": 4, "labels": {"hostname": "h2", "unique.rack": "r2"}},
        ],
        policy="binpack",
    )
    assert placed(pool.place(req(cpu=1, preferred=preferred))).worker == "h2"


# -- per-host labels ------------------------------------------------------------


def _hosts() -> ResourceAwareWorkerPool:
    return ResourceAwareWorkerPool(
        [
            {"name": n, "cpu": 4, "labels": {"hostname": n, "unique.rack": r, "zone": "eu"}}
            for n, r in (("h1", "r1"), ("h2", "r2"), ("h3", "r1"))
        ]
    )


@pytest.mark.parametrize(
    ("required", "allowed"),
    [
        (["hostname=h2"], {"h2"}),
        (["hostname in (h2, h3)"], {"h2", "h3"}),
        (["hostname!=h1", "hostname!=h3"], {"h2"}),
        (["unique.rack=r2"], {"h2"}),
        (["unique.rack=r1", "hostname!=h1"], {"h3"}),
        (["zone=eu", "hostname=h3"], {"h3"}),
    ],
)
def test_per_host_label_selectors_still_work(required: list[str], allowed: set[str]) -> None:
    pool = _hosts()
    for _ in range(3):
        assert placed(pool.place(req(required, cpu=1))).worker in allowed


def test_per_host_labels_are_per_worker_for_busy_and_infeasible() -> None:
    pool = _hosts()
    placed(pool.place(req(["hostname=h2"], cpu=4)))
    busy = refused(pool.place(req(["hostname=h2"], cpu=1)), "busy")
    assert "cpu" in busy.reasons
    infeasible = refused(pool.place(req(["hostname=h9"], cpu=1)), "infeasible")
    assert infeasible.reasons == {"labels": 3}
    # the cached plan for the same request must not leak h2's state to h1
    assert placed(pool.place(req(["hostname=h1"], cpu=4))).worker == "h1"


def test_per_host_infeasible_when_only_the_host_is_too_small() -> None:
    pool = ResourceAwareWorkerPool(
        [
            {"name": "small", "cpu": 2, "labels": {"hostname": "small"}},
            {"name": "large", "cpu": 16, "labels": {"hostname": "large"}},
        ]
    )
    refused(pool.place(req(["hostname=small"], cpu=8)), "infeasible")


# -- GPUs -------------------------------------------------------------------------


def test_fractional_gpus_share_one_device() -> None:
    pool = ResourceAwareWorkerPool([gpu_worker("g", [0, 1])])
    quarters = [placed(pool.place(req(cpu=1, gpus=0.25))) for _ in range(4)]
    assert {p.gpu_devices for p in quarters} == {(0,)}
    fifth = placed(pool.place(req(cpu=1, gpus=0.25)))
    assert fifth.gpu_devices == (1,)
    assert [d.free for d in pool.usage("g").devices] == [0.0, 0.75]


def test_fractional_gpus_that_do_not_add_up_use_separate_devices() -> None:
    pool = ResourceAwareWorkerPool([gpu_worker("g", [0, 1])])
    a = placed(pool.place(req(cpu=1, gpus=0.6)))
    b = placed(pool.place(req(cpu=1, gpus=0.6)))
    assert len(a.gpu_devices) == len(b.gpu_devices) == 1
    assert a.gpu_devices != b.gpu_devices
    # 0.4 is left on each device: never combined into a 0.6 or 0.8 share
    busy = refused(pool.place(req(cpu=1, gpus=0.6)), "busy")
    assert busy.reasons == {"gpus": 1}
    assert "0.4" in busy.nearest[0].missing[0].detail
    c = placed(pool.place(req(cpu=1, gpus=0.4)))
    assert c.gpu_devices in {(0,), (1,)}


def test_fractional_gpu_on_single_device_worker_is_busy_not_infeasible() -> None:
    pool = ResourceAwareWorkerPool([gpu_worker("g", [5])])
    assert placed(pool.place(req(cpu=1, gpus=0.6))).gpu_devices == (5,)
    refused(pool.place(req(cpu=1, gpus=0.6)), "busy")
    assert placed(pool.place(req(cpu=1, gpus=0.4))).gpu_devices == (5,)
    assert pool.usage("g").devices[0].free == 0.0


def test_fractional_gpu_prefers_the_fullest_device_that_fits() -> None:
    pool = ResourceAwareWorkerPool([gpu_worker("g", [0, 1])])
    placed(pool.place(req(cpu=1, gpus=0.6)))  # device 0: 0.4 left
    placed(pool.place(req(cpu=1, gpus=0.5)))  # device 1: 0.5 left
    assert placed(pool.place(req(cpu=1, gpus=0.4))).gpu_devices == (0,)
    assert placed(pool.place(req(cpu=1, gpus=0.5))).gpu_devices == (1,)


def test_whole_gpus_return_advertised_indexes() -> None:
    pool = ResourceAwareWorkerPool([gpu_worker("g", [3, 7])])
    assert placed(pool.place(req(cpu=1, gpus=1))).gpu_devices == (3,)
    assert placed(pool.place(req(cpu=1, gpus=1))).gpu_devices == (7,)
    refused(pool.place(req(cpu=1, gpus=1)), "busy")


def test_two_whole_gpus() -> None:
    pool = ResourceAwareWorkerPool([gpu_worker("g", [3, 7])])
    p = placed(pool.place(req(cpu=1, gpus=2), key="two"))
    assert p.gpu_devices == (3, 7)
    assert [d.free for d in pool.usage("g").devices] == [0.0, 0.0]
    pool.release("two")
    assert [(d.index, d.free) for d in pool.usage("g").devices] == [(3, 1.0), (7, 1.0)]


def test_whole_gpu_needs_entirely_free_devices() -> None:
    pool = ResourceAwareWorkerPool([gpu_worker("g", [3, 7])])
    share = placed(pool.place(req(cpu=1, gpus=0.25), key="share"))
    assert share.gpu_devices == (3,)
    busy = refused(pool.place(req(cpu=1, gpus=2)), "busy")
    assert busy.reasons == {"gpus": 1}
    assert busy.nearest[0].missing[0].detail == "needs 2 whole devices, has 1"
    assert placed(pool.place(req(cpu=1, gpus=1), key="whole")).gpu_devices == (7,)
    pool.release("share")
    pool.release("whole")
    assert placed(pool.place(req(cpu=1, gpus=2))).gpu_devices == (3, 7)


def test_whole_gpus_more_than_any_worker_has_is_infeasible() -> None:
    pool = ResourceAwareWorkerPool([gpu_worker("g", [3, 7])])
    result = refused(pool.place(req(cpu=1, gpus=3)), "infeasible")
    assert result.reasons == {"gpus": 1}
    assert result.nearest[0].worker == "g"
    assert missing_dims(result.nearest[0]) == {"gpus"}


def test_gpu_models_restrict_workers() -> None:
    pool = ResourceAwareWorkerPool(
        [gpu_worker("a100", [0], model="A100"), gpu_worker("h100", [0], model="H100")]
    )
    assert placed(pool.place(req(cpu=1, gpus=1, gpu_models=("H100",)))).worker == "h100"
    assert placed(pool.place(req(cpu=1, gpus=0.5, gpu_models=("A100",)))).worker == "a100"
    refused(pool.place(req(cpu=1, gpus=1, gpu_models=("H100",))), "busy")


def test_gpu_models_restrict_devices_within_a_worker() -> None:
    pool = ResourceAwareWorkerPool(
        [
            {
                "name": "mixed",
                "cpu": 16,
                "gpus": [
                    {"index": 2, "model": "T4", "memory_mb": 16384},
                    {"index": 5, "model": "H100", "memory_mb": 81920},
                    {"index": 6, "model": "A100", "memory_mb": 40960},
                    {"index": 9, "model": "H100", "memory_mb": 81920},
                ],
            }
        ]
    )
    assert placed(pool.place(req(cpu=1, gpus=2, gpu_models=("H100",)))).gpu_devices == (5, 9)
    assert placed(pool.place(req(cpu=1, gpus=0.5, gpu_models=("T4",)))).gpu_devices == (2,)
    assert placed(pool.place(req(cpu=1, gpus=1, gpu_mem_mb=20000))).gpu_devices == (6,)
    refused(pool.place(req(cpu=1, gpus=1, gpu_models=("H100", "A100"))), "busy")


def test_gpu_memory_restricts_devices() -> None:
    # bin-pack: the default policy would keep the big device for what needs it (test_fragment.py)
    pool = ResourceAwareWorkerPool(
        [
            {
                "name": "g",
                "cpu": 8,
                "gpus": [
                    {"index": 0, "model": "A100", "memory_mb": 40960},
                    {"index": 1, "model": "A100", "memory_mb": 81920},
                ],
            }
        ],
        policy="binpack",
    )
    assert placed(pool.place(req(cpu=1, gpus=0.25, gpu_mem_mb=50000))).gpu_devices == (1,)
    # both qualify now: the share goes to the fuller device (best fit)
    assert placed(pool.place(req(cpu=1, gpus=0.25, gpu_mem_mb=40960))).gpu_devices == (1,)
    # a whole device must be entirely free: only device 0 is
    assert placed(pool.place(req(cpu=1, gpus=1, gpu_mem_mb=40960))).gpu_devices == (0,)
    refused(pool.place(req(cpu=1, gpus=0.75, gpu_mem_mb=50000)), "busy")
    result = refused(pool.place(req(cpu=1, gpus=1, gpu_mem_mb=90000)), "infeasible")
    assert result.reasons == {"gpu_mem_mb": 1}


@pytest.mark.parametrize(
    ("fields", "dimension"),
    [
        ({"gpus": 1, "gpu_models": ("H100",)}, "gpu_models"),
        ({"gpus": 0.5, "gpu_models": ("T4", "V100")}, "gpu_models"),
        ({"gpus": 1, "gpu_mem_mb": 100000}, "gpu_mem_mb"),
        ({"gpus": 8}, "gpus"),
    ],
)
def test_gpu_constraints_infeasible(fields: dict[str, Any], dimension: str) -> None:
    pool = ResourceAwareWorkerPool([gpu_worker("g", [0, 1]), {"name": "c", "cpu": 64}])
    result = refused(pool.place(req(cpu=1, **fields)), "infeasible")
    # the GPU host lacks the constraint, the CPU host lacks GPUs altogether
    assert result.reasons == {dimension: 1, "gpus": 1} if dimension != "gpus" else {"gpus": 2}
    by_worker = {c.worker: missing_dims(c) for c in result.nearest}
    assert by_worker == {"g": {dimension}, "c": {"gpus"}}


def test_gpu_request_without_gpu_hosts() -> None:
    pool = ResourceAwareWorkerPool([{"cpu": 8}, {"cpu": 8}])
    result = refused(pool.place(req(cpu=1, gpus=0.5)), "infeasible")
    assert result.reasons == {"gpus": 2}
    assert result.nearest[0].missing[0].detail == "no GPU devices"


def test_anonymous_gpus_shorthand() -> None:
    pool = ResourceAwareWorkerPool([{"cpu_cores": 8, "ram_gb": 16, "gpus": 2}])
    assert placed(pool.place(req(cpu=1, gpus=2))).gpu_devices == (0, 1)


# -- custom resources ----------------------------------------------------------------


def test_custom_resources_are_counted() -> None:
    pool = ResourceAwareWorkerPool(
        [{"name": "plain", "cpu": 32}, {"name": "lic", "cpu": 4, "resources": {"licenses": 2}}]
    )
    p = placed(pool.place(req(cpu=1, resources={"licenses": 1.5}), key="a"))
    assert p.worker == "lic"
    assert pool.usage("lic").resources_free == {"licenses": 0.5}
    busy = refused(pool.place(req(cpu=1, resources={"licenses": 1})), "busy")
    assert busy.reasons == {"resources": 1}
    assert busy.nearest[0].worker == "lic"
    assert placed(pool.place(req(cpu=1, resources={"licenses": 0.5}))).worker == "lic"
    infeasible = refused(pool.place(req(cpu=1, resources={"licenses": 3})), "infeasible")
    assert infeasible.reasons == {"resources": 2}
    details = {c.worker: c.missing[0].detail for c in infeasible.nearest}
    assert details == {"plain": "licenses needs 3, has 0", "lic": "licenses needs 3, has 2"}
    # a zero amount asks for nothing
    assert placed(pool.place(req(cpu=1, resources={"licenses": 0}))).worker == "plain"


# -- busy versus infeasible -----------------------------------------------------------


def test_infeasible_cpu() -> None:
    pool = ResourceAwareWorkerPool([{"cpu_cores": 4, "ram_gb": 8}])
    result = refused(pool.place(req(cpu=8)), "infeasible")
    assert result.infeasible is True
    assert result.reasons == {"cpu": 1}
    assert len(result.nearest) == 1
    candidate = result.nearest[0]
    assert candidate.worker == "worker-0"
    assert [(r.dimension, r.detail) for r in candidate.missing] == [("cpu", "needs 8 cpu, has 4")]
    assert pool.reservations() == []


def test_infeasible_names_every_missing_dimension() -> None:
    pool = ResourceAwareWorkerPool([{"cpu_cores": 4, "ram_gb": 8}])
    result = refused(pool.place(req(["ssd"], cpu=8, ram_mb=16384)), "infeasible")
    assert result.reasons == {"cpu": 1, "ram_mb": 1, "labels": 1}
    assert missing_dims(result.nearest[0]) == {"cpu", "ram_mb", "labels"}
    details = {r.dimension: r.detail for r in result.nearest[0].missing}
    assert details["ram_mb"] == "needs 16384 MB, has 8192 MB"
    assert details["labels"] == "requires ssd"


def test_infeasible_counts_workers_per_dimension() -> None:
    pool = ResourceAwareWorkerPool(
        [{"cpu": 4}, {"cpu": 4}, {"cpu": 2, "labels": {"gpu": True}}],
    )
    result = refused(pool.place(req(["gpu=true"], cpu=3)), "infeasible")
    assert result.reasons == {"labels": 2, "cpu": 1}
    assert [(c.worker, missing_dims(c)) for c in result.nearest] == [
        ("worker-0", {"labels"}),
        ("worker-2", {"cpu"}),
    ]


def test_infeasible_with_no_workers() -> None:
    result = refused(ResourceAwareWorkerPool().place(req(cpu=1)), "infeasible")
    assert result.reasons == {}
    assert result.nearest == ()


def test_busy_cpu() -> None:
    pool = ResourceAwareWorkerPool([{"name": "a", "cpu": 4}])
    placed(pool.place(req(cpu=4)))
    result = refused(pool.place(req(cpu=1)), "busy")
    assert result.infeasible is False
    assert result.reasons == {"cpu": 1}
    assert [(c.worker, [(r.dimension, r.detail) for r in c.missing]) for c in result.nearest] == [
        ("a", [("cpu", "needs 1 cpu, has 0")])
    ]


def test_busy_when_only_a_busy_worker_is_big_enough() -> None:
    pool = ResourceAwareWorkerPool([{"name": "small", "cpu": 2}, {"name": "big", "cpu": 8}])
    placed(pool.place(req(cpu=8)))
    result = refused(pool.place(req(cpu=4)), "busy")
    assert result.reasons == {"cpu": 1}
    assert [c.worker for c in result.nearest] == ["big"]
    # the small worker still takes small work
    assert placed(pool.place(req(cpu=2))).worker == "small"


def test_busy_names_what_each_nearest_worker_lacks() -> None:
    pool = ResourceAwareWorkerPool(
        [{"name": "a", "cpu": 4, "ram_mb": 4096}, {"name": "b", "cpu": 4, "ram_mb": 4096}]
    )
    assert placed(pool.place(req(cpu=4, ram_mb=1024))).worker == "a"
    assert placed(pool.place(req(cpu=1, ram_mb=4096))).worker == "b"
    result = refused(pool.place(req(cpu=2, ram_mb=2048)), "busy")
    by_worker = {c.worker: missing_dims(c) for c in result.nearest}
    assert by_worker == {"a": {"cpu"}, "b": {"ram_mb"}}
    assert result.reasons == {"cpu": 1, "ram_mb": 1}


def test_busy_becomes_infeasible_when_the_big_worker_leaves() -> None:
    pool = ResourceAwareWorkerPool([{"name": "small", "cpu": 2}, {"name": "big", "cpu": 8}])
    placed(pool.place(req(cpu=8), key="fill"))
    refused(pool.place(req(cpu=4)), "busy")
    pool.remove_worker("big")
    result = refused(pool.place(req(cpu=4)), "infeasible")
    assert result.reasons == {"cpu": 1}
    assert [c.worker for c in result.nearest] == ["small"]


def test_infeasible_becomes_placeable_when_a_worker_joins() -> None:
    pool = ResourceAwareWorkerPool([{"name": "small", "cpu": 2}])
    refused(pool.place(req(cpu=4)), "infeasible")
    pool.add_worker({"name": "big", "cpu": 8})
    assert placed(pool.place(req(cpu=4))).worker == "big"


def test_infeasible_reasons_count_workers_that_joined_an_existing_shape() -> None:
    pool = ResourceAwareWorkerPool([{"name": "a", "cpu": 4}, {"name": "b", "cpu": 4}])
    assert refused(pool.place(req(cpu=8)), "infeasible").reasons == {"cpu": 2}
    pool.add_worker({"name": "c", "cpu": 4})
    assert refused(pool.place(req(cpu=8)), "infeasible").reasons == {"cpu": 3}


def test_infeasible_nearest_never_names_a_removed_worker() -> None:
    pool = ResourceAwareWorkerPool([{"name": "a", "cpu": 4}, {"name": "b", "cpu": 4}])
    assert [c.worker for c in refused(pool.place(req(cpu=8)), "infeasible").nearest] == ["a"]
    pool.remove_worker("a")
    result = refused(pool.place(req(cpu=8)), "infeasible")
    assert [c.worker for c in result.nearest] == ["b"]
    assert result.reasons == {"cpu": 1}


def test_busy_reasons_count_every_worker_that_fell_short() -> None:
    pool = ResourceAwareWorkerPool([{"cpu": 1} for _ in range(5)])
    for _ in range(5):
        placed(pool.place(req(cpu=1)))
    result = refused(pool.place(req(cpu=1)), "busy")
    assert len(result.nearest) == 3
    assert result.reasons == {"cpu": 5}


def test_cannot_place_str_is_readable() -> None:
    pool = ResourceAwareWorkerPool([{"name": "a", "cpu": 4}])
    text = str(refused(pool.place(req(cpu=8)), "infeasible"))
    assert text == "infeasible (cpu: 1 workers); nearest: a (cpu: needs 8 cpu, has 4)"


# -- reservations and release ---------------------------------------------------------


def test_placement_fields() -> None:
    pool = ResourceAwareWorkerPool([gpu_worker("g", [4])])
    request = req(cpu=2, ram_mb=1024, gpus=0.5)
    p = placed(pool.place(request, key=("run", "node", 1)))
    assert p == Placement(("run", "node", 1), "g", (4,), request)
    assert pool.reservation(("run", "node", 1)) == p
    assert pool.reservations() == [p]
    assert pool.reservations("g") == [p]


def test_generated_keys_are_distinct() -> None:
    pool = ResourceAwareWorkerPool([{"cpu": 8}])
    keys = {placed(pool.place(req(cpu=1))).key for _ in range(5)}
    assert len(keys) == 5
    assert len(pool.reservations()) == 5


def test_generated_key_never_collides_with_a_given_key() -> None:
    pool = ResourceAwareWorkerPool([{"name": "a", "cpu": 8}])
    given = placed(pool.place(req(cpu=1), key=0))
    generated = placed(pool.place(req(cpu=1)))
    assert generated.key != given.key
    assert len(pool.reservations()) == 2
    pool.release(given.key)
    pool.release(generated.key)
    assert pool.usage("a").cpu_free == 8.0


def test_duplicate_key_refused() -> None:
    pool = ResourceAwareWorkerPool([{"name": "a", "cpu": 8}])
    first = placed(pool.place(req(cpu=2), key="k"))
    with pytest.raises(ValueError, match="already held"):
        pool.place(req(cpu=1), key="k")
    assert pool.reservation("k") == first
    assert pool.usage("a").cpu_free == 6.0
    pool.release("k")
    assert placed(pool.place(req(cpu=1), key="k")).key == "k"


def test_release_restores_exact_free_capacity() -> None:
    pool = ResourceAwareWorkerPool(
        [
            {
                "name": "w",
                "cpu": 7.5,
                "ram_mb": 10000,
                "gpus": [{"index": 1, "model": "A100"}, {"index": 6, "model": "A100"}],
                "resources": {"licenses": 3, "fpga": 0.5},
            }
        ]
    )
    before = snapshot(pool, "w")
    requests = [
        req(cpu=0.1, ram_mb=333, gpus=0.1, resources={"licenses": 0.7}),
        req(cpu=2.3, ram_mb=1, gpus=0.3),
        req(cpu=0.001, gpus=1, resources={"fpga": 0.5}),
        req(cpu=1.7, ram_mb=5000, resources={"licenses": 2.3}),
    ]
    for n, request in enumerate(requests):
        placed(pool.place(request, key=n))
    u = pool.usage("w")
    assert u.cpu_free == pytest.approx(3.399)
    assert u.ram_free_mb == 10000 - 333 - 1 - 5000
    assert [d.free for d in u.devices] == [pytest.approx(0.6), 0.0]
    assert u.resources_free == {"licenses": 0.0, "fpga": 0.0}
    assert u.reservations == 4
    for n in (2, 0, 3, 1):
        released = pool.release(n)
        assert released.request == requests[n]
    assert snapshot(pool, "w") == before
    assert pool.usage("w").cpu_free == 7.5


def test_many_small_releases_do_not_drift() -> None:
    pool = ResourceAwareWorkerPool([{"name": "w", "cpu": 1, "gpus": 1}])
    for n in range(10):
        placed(pool.place(req(cpu=0.1, gpus=0.1), key=n))
    refused(pool.place(req(cpu=0.1)), "busy")
    refused(pool.place(req(cpu=0.001, gpus=0.1)), "busy")
    for n in range(10):
        pool.release(n)
    u = pool.usage("w")
    assert (u.cpu_free, u.devices[0].free, u.reservations) == (1.0, 1.0, 0)


def test_release_partial_then_fits_again() -> None:
    pool = ResourceAwareWorkerPool([{"name": "a", "cpu": 4}])
    placed(pool.place(req(cpu=3), key="big"))
    refused(pool.place(req(cpu=2)), "busy")
    assert pool.release("big").worker == "a"
    assert pool.reservation("big") is None
    assert placed(pool.place(req(cpu=2))).worker == "a"


def test_release_unknown_key() -> None:
    pool = ResourceAwareWorkerPool([{"cpu": 4}])
    with pytest.raises(KeyError):
        pool.release("nope")
    placed(pool.place(req(cpu=1), key="k"))
    pool.release("k")
    with pytest.raises(KeyError):
        pool.release("k")


# -- remove and update ---------------------------------------------------------------


def test_remove_worker_returns_its_placements() -> None:
    pool = ResourceAwareWorkerPool(
        [{"name": "a", "cpu": 4, "labels": {"n": "a"}}, {"name": "b", "cpu": 4}]
    )
    on_a = [placed(pool.place(req(["n=a"], cpu=1), key=f"a{i}")) for i in range(2)]
    on_b = placed(pool.place(req(["n notin (a)"], cpu=1), key="b0"))
    removed = pool.remove_worker("a")
    assert sorted(p.key for p in removed) == ["a0", "a1"]
    assert set(removed) == set(on_a)
    assert pool.workers == ["b"]
    assert "a" not in pool
    assert pool.reservations() == [on_b]
    assert pool.reservation("a0") is None
    with pytest.raises(KeyError):
        pool.release("a0")
    # work that required "a" is now infeasible, other work goes to b
    refused(pool.place(req(["n=a"], cpu=1)), "infeasible")
    assert placed(pool.place(req(cpu=1))).worker == "b"


def test_remove_idle_worker_returns_nothing() -> None:
    pool = ResourceAwareWorkerPool([{"name": "a", "cpu": 4}])
    assert pool.remove_worker("a") == []
    assert len(pool) == 0
    with pytest.raises(KeyError):
        pool.remove_worker("a")


def test_remove_then_add_same_name() -> None:
    pool = ResourceAwareWorkerPool([{"name": "a", "cpu": 4}])
    placed(pool.place(req(cpu=4), key="k"))
    pool.remove_worker("a")
    pool.add_worker({"name": "a", "cpu": 4})
    assert pool.usage("a").cpu_free == 4.0
    assert placed(pool.place(req(cpu=4), key="k")).worker == "a"


def test_update_worker_keeps_reservations() -> None:
    pool = ResourceAwareWorkerPool([{"name": "a", "cpu": 8, "ram_mb": 4096}])
    p = placed(pool.place(req(cpu=3, ram_mb=1000), key="k"))
    evicted = pool.update_worker({"name": "a", "cpu": 16, "ram_mb": 8192, "labels": {"x": 1}})
    assert evicted == []
    assert pool.reservation("k") == p
    u = pool.usage("a")
    assert (u.cpu, u.cpu_free, u.ram_mb, u.ram_free_mb, u.labels, u.reservations) == (
        16.0,
        13.0,
        8192,
        7192,
        {"x": "1"},
        1,
    )
    assert placed(pool.place(req(["x=1"], cpu=13))).worker == "a"
    pool.release("k")
    assert pool.usage("a").cpu_free == 3.0


def test_update_worker_shrunk_takes_nothing_until_released() -> None:
    pool = ResourceAwareWorkerPool([{"name": "a", "cpu": 8}])
    placed(pool.place(req(cpu=6), key="k"))
    assert pool.update_worker({"name": "a", "cpu": 4}) == []
    assert pool.reservation("k") is not None
    refused(pool.place(req(cpu=1)), "busy")
    pool.release("k")
    assert pool.usage("a").cpu_free == 4.0
    assert placed(pool.place(req(cpu=4))).worker == "a"


def test_update_worker_keeps_gpu_reservations_on_remaining_devices() -> None:
    pool = ResourceAwareWorkerPool([gpu_worker("g", [0, 1])])
    p = placed(pool.place(req(cpu=1, gpus=0.5), key="k"))
    assert p.gpu_devices == (0,)
    assert pool.update_worker(gpu_worker("g", [0, 1, 2])) == []
    assert [(d.index, d.free) for d in pool.usage("g").devices] == [(0, 0.5), (1, 1.0), (2, 1.0)]
    pool.release("k")
    assert [d.free for d in pool.usage("g").devices] == [1.0, 1.0, 1.0]


def test_update_worker_evicts_placements_on_vanished_devices() -> None:
    pool = ResourceAwareWorkerPool([gpu_worker("g", [0, 1])])
    p = placed(pool.place(req(cpu=2, gpus=2), key="k"))
    kept = placed(pool.place(req(cpu=1), key="cpu"))
    evicted = pool.update_worker(gpu_worker("g", [0]))
    assert evicted == [p]
    assert pool.reservation("k") is None
    assert pool.reservation("cpu") == kept
    u = pool.usage("g")
    assert ([d.free for d in u.devices], u.cpu_free, u.reservations) == ([1.0], 15.0, 1)
    assert placed(pool.place(req(cpu=1, gpus=1))).gpu_devices == (0,)


def test_update_worker_evicts_by_device_index_not_position() -> None:
    pool = ResourceAwareWorkerPool([gpu_worker("g", [3, 7])])
    on_3 = placed(pool.place(req(cpu=1, gpus=1), key="on3"))
    assert on_3.gpu_devices == (3,)
    evicted = pool.update_worker(gpu_worker("g", [7]))
    assert evicted == [on_3]
    assert [(d.index, d.free) for d in pool.usage("g").devices] == [(7, 1.0)]


def test_update_unknown_worker() -> None:
    with pytest.raises(KeyError):
        ResourceAwareWorkerPool().update_worker({"name": "ghost", "cpu": 1})


# -- observed free memory --------------------------------------------------------------


def test_observe_limits_ram() -> None:
    pool = ResourceAwareWorkerPool([{"name": "a", "cpu": 8, "ram_mb": 8000}])
    pool.observe("a", available_ram_mb=2000)
    busy = refused(pool.place(req(cpu=1, ram_mb=3000)), "busy")
    assert busy.reasons == {"ram_mb": 1}
    assert busy.nearest[0].missing[0].detail == "needs 3000 MB, has 2000 MB"
    assert placed(pool.place(req(cpu=1, ram_mb=2000), key="k")).worker == "a"
    refused(pool.place(req(cpu=1, ram_mb=1)), "busy")
    assert pool.usage("a").ram_free_mb == 6000  # reservations only; observation is separate
    pool.observe("a", available_ram_mb=None)
    assert placed(pool.place(req(cpu=1, ram_mb=6000))).worker == "a"


def test_observe_does_not_make_infeasible() -> None:
    pool = ResourceAwareWorkerPool([{"name": "a", "cpu": 8, "ram_mb": 8000}])
    pool.observe("a", available_ram_mb=0)
    refused(pool.place(req(cpu=1, ram_mb=100)), "busy")
    refused(pool.place(req(cpu=1, ram_mb=9000)), "infeasible")
    assert placed(pool.place(req(cpu=1))).worker == "a"


def test_observe_prefers_hosts_with_real_memory() -> None:
    pool = ResourceAwareWorkerPool(
        [{"name": "a", "cpu": 8, "ram_mb": 8000}, {"name": "b", "cpu": 8, "ram_mb": 8000}]
    )
    pool.observe("a", available_ram_mb=500)
    assert [placed(pool.place(req(cpu=1, ram_mb=1000))).worker for _ in range(3)] == ["b"] * 3


def test_observe_release_restores_observed_memory() -> None:
    pool = ResourceAwareWorkerPool([{"name": "a", "cpu": 8, "ram_mb": 8000}])
    pool.observe("a", available_ram_mb=4000)
    placed(pool.place(req(cpu=1, ram_mb=4000), key=1))
    pool.release(1)
    assert placed(pool.place(req(cpu=1, ram_mb=4000), key=2)).worker == "a"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: p.release("nope"), "no reservation 'nope' is held"),
        (lambda p: p.remove_worker("ghost"), "no worker 'ghost' in the pool"),
        (lambda p: p.update_worker({"name": "ghost", "cpu": 1}), "no worker 'ghost' in the pool"),
        (lambda p: p.observe("ghost", available_ram_mb=1), "no worker 'ghost' in the pool"),
        (lambda p: p.usage("ghost"), "no worker 'ghost' in the pool"),
    ],
)
def test_unknown_names_get_a_clear_error(
    call: Callable[[ResourceAwareWorkerPool], object], message: str
) -> None:
    pool = ResourceAwareWorkerPool([{"name": "a", "cpu": 2}])
    with pytest.raises(KeyError, match=message):
        call(pool)
    assert pool.workers == ["a"]


def test_adopted_gpu_work_without_its_devices_still_holds_a_device() -> None:
    """A worker that rejoins lists its running attempts without their devices; the share
    it runs must still be charged, or a whole-device task lands on the same GPU (found by
    the scheduler state machine: 1.5 GPUs reserved on a 1-GPU worker)."""
    pool = ResourceAwareWorkerPool(workers=[gpu_worker("g", [0])])
    adopted = pool.adopt("g", req(cpu=1, gpus=0.5), "running", ())
    assert adopted.gpu_devices == (0,)
    refused(pool.place(req(cpu=1, gpus=1), key="whole"), "busy")
    placed(pool.place(req(cpu=1, gpus=0.5), key="share"))
    pool.release("running")
    assert pool.usage("g").devices[0].free == pytest.approx(0.5)


def test_a_custom_resource_that_disappears_evicts_what_held_it() -> None:
    """An agent restarted without ``--resources licenses=2`` re-advertises under its name:
    the work holding a license is returned to be placed again (it raised KeyError)."""
    pool = ResourceAwareWorkerPool(
        workers=[{"name": "w", "cpu": 4, "ram_mb": 4096, "resources": {"licenses": 2}}]
    )
    held = placed(pool.place(req(cpu=1, resources={"licenses": 1}), key="lic"))
    plain = placed(pool.place(req(cpu=1), key="plain"))
    spec = {"name": "w", "cpu": 8, "ram_mb": 4096, "resources": {"licenses": 2}}
    assert pool.update_worker(spec) == []  # still advertised: kept
    evicted = pool.update_worker({"name": "w", "cpu": 4, "ram_mb": 4096})
    assert evicted == [held]
    assert [p.key for p in pool.reservations()] == [plain.key]
    refused(pool.place(req(cpu=1, resources={"licenses": 1})), "infeasible")


def test_adopting_work_that_holds_an_unadvertised_resource_is_accounted() -> None:
    pool = ResourceAwareWorkerPool(workers=[{"name": "w", "cpu": 4, "ram_mb": 4096}])
    pool.adopt("w", req(cpu=1, resources={"licenses": 1}), "old", ())
    pool.release("old")
    assert pool.usage("w").cpu_free == 4
