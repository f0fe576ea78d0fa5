"""The placement stack (coordinator/placement/stack.py): its stages run in the stated order,
and a request turned away by an early stage never reaches a later one."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from coordinator.placement import stack
from coordinator.placement.outcome import CannotPlace, Placement, PlaceResult
from coordinator.placement.policies import BinPack, Walk
from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.placement.shapes import Binding, ShapeClass
from shared.labels import LabelSelector, Op, as_selectors
from shared.resources import ResourceRequest
from shared.wire import label_keys

ROOT = Path(__file__).resolve().parents[2]


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


def refused(result: PlaceResult, kind: str) -> CannotPlace:
    assert isinstance(result, CannotPlace), f"expected {kind}, got {result}"
    assert result.kind == kind, str(result)
    return result


def routed(task_tags: Iterable[str], **fields: Any) -> ResourceRequest:
    """A request as the scheduler's task catalog narrows it (coordinator/scheduling/tasks.py)."""
    selector = LabelSelector(key=label_keys.WORKER_TASKS, op=Op.IN, values=(*task_tags, "any"))
    return ResourceRequest(required=(selector,), **fields)


def tagged(name: str, tag: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "cpu": 4,
        "ram_mb": 4096,
        "labels": {label_keys.WORKER_TASKS: tag},
    } | extra


# -- the order, stated once -----------------------------------------------------


def test_feasibility_checks_run_cheapest_first() -> None:
    names = [check.__name__.removeprefix("check_") for check in stack.FEASIBILITY]
    assert names == ["labels", "cpu", "ram", "custom", "gpus"]


def test_the_docstring_lists_the_stages_in_their_order() -> None:
    assert stack.__doc__ is not None
    listed = re.findall(r"^\d+\. \*\*(\w+)\*\*", stack.__doc__, flags=re.MULTILINE)
    assert tuple(listed) == stack.STAGES


def test_the_architecture_document_lists_the_stages_in_their_order() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Placement pipeline", 1)[1].split("\n## ", 1)[0]
    assert "placement/stack.py" in section or "`stack.py`" in section
    listed = re.findall(r"^\d+\. \*\*(\w+)\*\*", section, flags=re.MULTILINE)
    assert tuple(listed) == stack.STAGES


def test_an_explanation_names_every_shortfall_in_check_order() -> None:
    pool = ResourceAwareWorkerPool([{"name": "small", "cpu": 1, "ram_mb": 512}])
    request = ResourceRequest(
        cpu=2, ram_mb=1024, resources={"licenses": 1}, gpus=1, required=as_selectors(["zone=a"])
    )
    answer = refused(pool.place(request), "infeasible")
    (nearest,) = answer.nearest
    assert [r.dimension for r in nearest.missing] == [
        "labels",
        "cpu",
        "ram_mb",
        "resources",
        "gpus",
    ]


# -- early stages turn requests away before the walk -------------------------------


def test_task_routing_is_decided_by_the_label_check_before_any_walk() -> None:
    """The task tag is a shape-class label: a worker without the task is never walked."""
    pool = ResourceAwareWorkerPool([tagged("w1", "abc"), tagged("w2", "abc")])
    policy = CountingPolicy()
    answer = refused(pool.place(routed(["xyz"], cpu=1), policy=policy), "infeasible")
    assert answer.reasons == {"labels": 2}
    assert policy.walked == []


def test_task_routing_sends_work_only_to_workers_with_the_task() -> None:
    pool = ResourceAwareWorkerPool([tagged("w1", "abc", cpu=8), tagged("w2", "xyz")])
    policy = CountingPolicy()
    for _ in range(4):
        result = pool.place(routed(["xyz"], cpu=1), policy=policy)
        assert isinstance(result, Placement)
        assert result.worker == "w2"
    assert {cls.labels[label_keys.WORKER_TASKS] for cls in policy.walked} == {"xyz"}
    refused(pool.place(routed(["xyz"], cpu=1), policy=policy), "busy")


def test_a_worker_that_has_not_said_its_tasks_takes_any() -> None:
    pool = ResourceAwareWorkerPool([tagged("w1", "any")])
    assert isinstance(pool.place(routed(["xyz"], cpu=1)), Placement)


def test_a_resource_shortfall_is_infeasible_without_a_walk() -> None:
    pool = ResourceAwareWorkerPool([{"name": "w1", "cpu": 2, "ram_mb": 1024}])
    policy = CountingPolicy()
    refused(pool.place(ResourceRequest(cpu=4), policy=policy), "infeasible")
    refused(pool.place(ResourceRequest(ram_mb=2048), policy=policy), "infeasible")
    assert policy.walked == []


def test_named_hosts_skip_the_walk() -> None:
    workers = [{"name": f"h{i}", "cpu": 4, "labels": {"hostname": f"h{i}"}} for i in range(3)]
    pool = ResourceAwareWorkerPool(workers)
    policy = CountingPolicy()
    request = ResourceRequest(cpu=1, required=as_selectors(["hostname=h1"]))
    result = pool.place(request, policy=policy)
    assert isinstance(result, Placement)
    assert result.worker == "h1"
    assert policy.walked == []


# -- the stages, observed in order --------------------------------------------------


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records, in order, every stage function the stack calls."""
    seen: list[str] = []

    def spy(name: str, stage: str) -> None:
        original: Callable[..., Any] = getattr(stack, name)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            seen.append(stage)
            return original(*args, **kwargs)

        monkeypatch.setattr(stack, name, recorded)

    spy("make_plan", "feasibility")
    spy("infeasible", "explain")
    spy("scan_group", "walk")
    spy("busy_view", "explain")
    return seen


def test_a_placement_plans_once_then_walks(calls: list[str]) -> None:
    pool = ResourceAwareWorkerPool([{"name": "w1", "cpu": 4}])
    assert isinstance(pool.place(ResourceRequest(cpu=1)), Placement)
    assert calls == ["feasibility", "walk"]
    calls.clear()
    assert isinstance(pool.place(ResourceRequest(cpu=1)), Placement)
    assert calls == ["walk"], "the plan is cached per distinct request"


def test_busy_is_explained_after_the_walk(calls: list[str]) -> None:
    pool = ResourceAwareWorkerPool([{"name": "w1", "cpu": 4}])
    pool.place(ResourceRequest(cpu=4))
    calls.clear()
    refused(pool.place(ResourceRequest(cpu=4)), "busy")
    assert calls == ["walk", "explain"]


def test_infeasible_is_explained_without_a_walk(calls: list[str]) -> None:
    pool = ResourceAwareWorkerPool([{"name": "w1", "cpu": 4}])
    refused(pool.place(ResourceRequest(cpu=8)), "infeasible")
    assert calls == ["feasibility", "explain"]


def test_a_new_shape_invalidates_the_plan(calls: list[str]) -> None:
    pool = ResourceAwareWorkerPool([{"name": "w1", "cpu": 4}])
    refused(pool.place(ResourceRequest(cpu=8)), "infeasible")
    pool.add_worker({"name": "w2", "cpu": 8})
    calls.clear()
    assert isinstance(pool.place(ResourceRequest(cpu=8)), Placement)
    assert calls == ["feasibility", "walk"]


# -- purity ---------------------------------------------------------------------------


def test_select_changes_nothing() -> None:
    pool = ResourceAwareWorkerPool([{"name": "w1", "cpu": 4}, {"name": "w2", "cpu": 2}])
    before = [pool.usage(n) for n in pool.workers]
    for _ in range(3):
        found = pool._stack.select(ResourceRequest(cpu=1), BinPack())
        assert not isinstance(found, CannotPlace)
        assert found[1].worker.name == "w2"
    assert [pool.usage(n) for n in pool.workers] == before
    assert pool.reservations() == []


def test_the_stack_loads_no_io_library() -> None:
    code = (
        "import sys\nimport coordinator.placement.stack\n"
        "print(sorted(n for n in ('taskiq', 'nats', 'asyncio', 'structlog') if n in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
