"""The agent's capacity guard: what it admits, what it refuses and why, exact release."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.labels import LabelSelector
from shared.resources import GPUDevice, ResourceRequest, WorkerSpec
from shared.wire.protocol import Assignment, AttemptRef, Reserved
from worker_agent.guard import CapacityGuard

SPEC = WorkerSpec(
    name="w1",
    cpu=4,
    ram_mb=8192,
    gpus=(GPUDevice(index=0, model="L4", memory_mb=24576), GPUDevice(index=3, model="A100")),
    resources={"licenses": 2},
    labels={"zone": "a"},
)


def assign(node: str, devices: tuple[int, ...] = (), **request: Any) -> Assignment:
    return Assignment(
        ref=AttemptRef(run_id="r", node_id=node, attempt=1),
        task_name="t",
        request=ResourceRequest(**request),
        gpu_devices=devices,
    )


def test_admits_within_capacity_and_reports_reserved() -> None:
    guard = CapacityGuard(SPEC)
    assert guard.admit(assign("a", cpu=1.5, ram_mb=1000)) is None
    assert guard.admit(assign("b", (3,), cpu=0.5, gpus=0.25, resources={"licenses": 1})) is None
    assert guard.reserved() == Reserved(
        cpu=2.0, ram_mb=1000, gpus={3: 0.25}, resources={"licenses": 1.0}
    )


@pytest.mark.parametrize(
    ("first", "second", "text"),
    [
        ({"cpu": 3}, {"cpu": 1.5}, "cpu 1.5 > free 1"),
        ({"ram_mb": 8000}, {"ram_mb": 500}, "ram_mb 500 > free 192"),
        ({"resources": {"licenses": 2}}, {"resources": {"licenses": 1}}, "licenses 1 > free 0"),
    ],
)
def test_refuses_beyond_free_capacity_with_the_dimension(
    first: dict[str, Any], second: dict[str, Any], text: str
) -> None:
    guard = CapacityGuard(SPEC)
    assert guard.admit(assign("a", **first)) is None
    before = guard.reserved()
    refusal = guard.admit(assign("b", **second))
    assert refusal is not None
    assert refusal.code == "capacity"
    assert text in refusal.reason
    assert guard.reserved() == before
    assert not guard.holds(AttemptRef(run_id="r", node_id="b", attempt=1))


def test_gpu_devices_are_checked_as_named() -> None:
    guard = CapacityGuard(SPEC)
    assert guard.admit(assign("a", (0,), gpus=0.5)) is None
    taken = guard.admit(assign("b", (0,), gpus=1))
    assert taken is not None
    assert "gpu 0 share 1 > free 0.5" in taken.reason
    missing = guard.admit(assign("c", (7,), gpus=1))
    assert missing is not None
    assert "gpu 7 does not exist" in missing.reason
    wrong_model = guard.admit(assign("d", (3,), gpus=1, gpu_models=["L4"]))
    assert wrong_model is not None
    assert "does not match" in wrong_model.reason
    assert guard.admit(assign("e", (3,), gpus=1)) is None


def test_required_labels_are_checked() -> None:
    guard = CapacityGuard(SPEC)
    refusal = guard.admit(assign("a", required=[LabelSelector.parse("zone=b")]))
    assert refusal is not None
    assert refusal.code == "labels"
    assert "zone=b" in refusal.reason
    assert guard.admit(assign("b", required=[LabelSelector.parse("zone=a")])) is None


def test_draining_refuses_everything() -> None:
    guard = CapacityGuard(SPEC)
    guard.draining = True
    refusal = guard.admit(assign("a", cpu=0.1))
    assert refusal is not None
    assert refusal.code == "draining"


def test_double_admission_is_a_bug() -> None:
    guard = CapacityGuard(SPEC)
    guard.admit(assign("a"))
    with pytest.raises(ValueError, match="already admitted"):
        guard.admit(assign("a"))


def test_release_is_exact_and_once() -> None:
    guard = CapacityGuard(SPEC)
    a = assign("a", (0,), cpu=4, ram_mb=8192, gpus=0.3)
    assert guard.admit(a) is None
    assert guard.release(a.ref) is True
    assert guard.release(a.ref) is False
    assert guard.reserved() == Reserved()
    assert guard.admit(assign("b", (0,), cpu=4, ram_mb=8192, gpus=1)) is None


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3000)), max_size=30))
def test_never_reserves_more_than_capacity(requests: list[tuple[int, int]]) -> None:
    guard = CapacityGuard(SPEC)
    for i, (deci_cpu, ram) in enumerate(requests):
        guard.admit(assign(f"n{i}", cpu=deci_cpu / 10, ram_mb=ram))
        reserved = guard.reserved()
        assert reserved.cpu <= SPEC.cpu
        assert reserved.ram_mb <= SPEC.ram_mb
