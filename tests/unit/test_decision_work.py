"""What a placement decision does again, counted rather than timed.

A decision changes one worker, so the next decision should redo the work of
that worker's shape class only, and keep out of indexes nobody reads. The
answers themselves are checked against a pool that forgot what it kept in
tests/property/test_kept_answers.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from coordinator.placement import shapes
from coordinator.placement.fragment import ClassTable
from coordinator.placement.outcome import (
    Candidate,
    CannotPlace,
    Placement,
    new_cannot_place,
    new_placement,
)
from coordinator.placement.policies import BinPack, Walk
from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.placement.shapes import Binding, ShapeClass
from shared.capacity import Ledger
from shared.labels import as_selectors
from shared.resources import ResourceRequest


class CountingPolicy:
    """Bin-pack that records every class it is asked to walk."""

    name = "counting"
    per_walk = 2
    classes = 3
    visits = 32

    def __init__(self) -> None:
        self.walked: list[ShapeClass] = []

    def walks(self, cls: ShapeClass, b: Binding) -> list[Walk]:
        self.walked.append(cls)
        return BinPack().walks(cls, b)


def test_a_decision_walks_again_only_the_class_the_last_one_changed() -> None:
    zones = [{"name": f"w{i}", "cpu": 8, "labels": {"zone": f"z{i}"}} for i in range(6)]
    pool = ResourceAwareWorkerPool(zones)
    policy = CountingPolicy()
    request = ResourceRequest(cpu=1, required=as_selectors(["zone"]))  # one class per zone
    first = pool.place(request, policy=policy)
    assert isinstance(first, Placement)
    assert len(policy.walked) == 6
    for _ in range(5):
        policy.walked.clear()
        assert isinstance(pool.place(request, policy=policy), Placement)
        assert [cls.labels["zone"] for cls in policy.walked] == [
            pool.usage(first.worker).labels["zone"]
        ]


def test_placing_on_gpu_hosts_sorts_no_index_until_one_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default policy walks GPU hosts by their grid; the free-capacity indexes are put
    in order only when an explanation (or another policy) reads them."""
    gpus = [{"index": i, "model": "A100", "memory_mb": 40960} for i in range(2)]
    pool = ResourceAwareWorkerPool([{"name": f"g{i}", "cpu": 8, "gpus": gpus} for i in range(3)])
    filed: list[Any] = []
    insort = shapes.insort
    monkeypatch.setattr(
        shapes, "insort", lambda entries, item: (filed.append(item), insort(entries, item))
    )
    for _ in range(6):
        assert isinstance(pool.place(ResourceRequest(cpu=1, gpus=1)), Placement)
    assert filed == []
    busy = pool.place(ResourceRequest(cpu=1, gpus=1))
    assert isinstance(busy, CannotPlace)
    assert busy.kind == "busy"
    assert busy.reasons == {"gpus": 3}
    assert filed, "explaining the wait reads the indexes, in order"


def test_fitting_cpu_work_looks_at_no_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every candidate is fitted; CPU-only work has no device to pick on a GPU host."""
    gpus = [{"index": i, "model": "A100", "memory_mb": 40960} for i in range(4)]
    pool = ResourceAwareWorkerPool([{"name": f"g{i}", "cpu": 8, "gpus": gpus} for i in range(3)])
    picked: list[object] = []
    pick = Ledger.pick_devices
    monkeypatch.setattr(Ledger, "pick_devices", lambda w, d: (picked.append(d), pick(w, d))[1])
    for policy in ("hybrid", "binpack", "spread"):
        assert isinstance(pool.place(ResourceRequest(cpu=1), policy=policy), Placement)
    assert picked == []


def test_cpu_only_placements_leave_the_mix_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mix counts GPU requests only, so a CPU-only placement does not consult it."""
    pool = ResourceAwareWorkerPool([{"name": f"w{i}", "cpu": 8} for i in range(3)])
    recorded: list[object] = []
    monkeypatch.setattr(pool.mix, "record", lambda *args, **kwargs: recorded.append(args))
    for _ in range(5):
        assert isinstance(pool.place(ResourceRequest(cpu=1)), Placement)
    assert recorded == []


def test_a_placement_is_made_without_the_frozen_init_and_is_the_same() -> None:
    request = ResourceRequest(cpu=1, gpus=1)
    made = new_placement("k", "w", (0, 1), request)
    assert made == Placement("k", "w", (0, 1), request)
    assert hash(made) == hash(Placement("k", "w", (0, 1), request))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.worker = "other"  # type: ignore[misc]


def test_a_busy_answer_is_made_without_the_frozen_init_and_is_the_same() -> None:
    nearest = (Candidate("w", ()),)
    made = new_cannot_place("busy", {"cpu": 2}, nearest)
    assert made == CannotPlace("busy", {"cpu": 2}, nearest)
    assert str(made) == str(CannotPlace("busy", {"cpu": 2}, nearest))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.kind = "infeasible"  # type: ignore[misc]


@pytest.mark.parametrize("gpus", [0.25, 1, 0])
def test_the_placed_worker_keeps_the_state_its_scoring_found(gpus: float) -> None:
    """Scoring a host finds the device state a placement leaves it in, and its
    fragmentation there; the pool hands both on, so the host's next scoring does not
    look them up again. They are what a lookup from scratch finds."""
    devices = [{"index": i, "model": "A100", "memory_mb": 40960} for i in range(4)]
    pool = ResourceAwareWorkerPool(
        [{"name": f"g{i}", "cpu": 32, "gpus": devices} for i in range(3)]
    )
    for _ in range(3):
        placed = pool.place(ResourceRequest(cpu=2, gpus=gpus or 0.5))
        assert isinstance(placed, Placement)
    placed = pool.place(ResourceRequest(cpu=2, gpus=gpus))
    assert isinstance(placed, Placement)
    worker = pool._workers[placed.worker]
    carried = worker.before
    assert carried is not None
    ct = worker.scored_with
    assert isinstance(ct, ClassTable)
    sid = ct.state(tuple(sorted(worker.free_dev)))
    assert carried == (sid, ct.frag(worker.free_cpu, worker.usable_ram(), sid))


def test_a_groups_scan_order_is_kept_in_order() -> None:
    """The classes of a group are scanned in order of their estimates; the plan keeps that
    order and moves only the classes walked again, so it must stay what sorting gives."""
    workers = [
        {"name": f"w{i}", "cpu": 4 + i % 5, "ram_mb": 8192, "labels": {"zone": f"z{i % 4}"}}
        for i in range(40)
    ]
    pool = ResourceAwareWorkerPool(workers)
    request = ResourceRequest(cpu=1, ram_mb=512, required=as_selectors(["zone"]))
    held = []
    for step in range(60):
        placed = pool.place(request)
        assert isinstance(placed, Placement)
        held.append(placed.key)
        if step % 3 == 2:
            pool.release(held.pop(0))
        plan = pool._stack.plan(request)
        for walked in plan.kept[pool.policy]:
            expected = sorted(
                (*v.estimate, n) for n, v in enumerate(walked.views) if v and v.estimate
            )
            assert walked.order == expected
