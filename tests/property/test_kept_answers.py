"""What the pool keeps between decisions never changes a decision.

A decision reuses a lot: per shape class, each request's walk and scores while
the class is unchanged (``select.class_walk``, ``fragment_select.py``); per
class table, device states, moves between them and ``frag`` values
(``fragment.py``); per worker, its scores; and the free-capacity indexes are put
in order only when read (``ShapeClass.index``). Here a pool lives through adds,
removals, re-advertisements, observed memory, placements and releases under every
policy, and at each step its answer to a request must equal the answer of a copy
of it that forgot everything it kept, and every index must equal one sorted from
scratch.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from coordinator.placement.grid import GpuGrid, filed
from coordinator.placement.outcome import CannotPlace, Placement
from coordinator.placement.policies import POLICIES
from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.placement.shapes import Axis, ShapeClass, grid_key, index_keys
from shared.labels import LabelSelector, PreferredLabel
from shared.resources import ResourceRequest

# A few machine shapes, so that classes have several members and the walks have a choice.
SHAPES: tuple[dict[str, Any], ...] = (
    {"cpu": 2, "ram_mb": 4096},
    {"cpu": 8, "ram_mb": 16384},
    {"cpu": 8, "ram_mb": 16384, "gpus": [{"index": 0, "model": "T4", "memory_mb": 16000}]},
    {
        "cpu": 16,
        "ram_mb": 65536,
        "gpus": [{"index": i, "model": "A100", "memory_mb": 40000} for i in range(4)],
    },
    {
        "cpu": 32,
        "ram_mb": 131072,
        "gpus": [
            {"index": i, "model": "H100" if i % 2 else "A100", "memory_mb": 80000} for i in range(4)
        ],
        "resources": {"licenses": 2},
    },
)


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    spec = dict(draw(st.sampled_from(SHAPES)))
    labels = {"zone": draw(st.sampled_from(["a", "b"]))}
    if draw(st.booleans()):
        labels["tier"] = "spot"
    spec["labels"] = labels
    return spec


@st.composite
def requests(draw: st.DrawFn) -> ResourceRequest:
    gpus = draw(st.sampled_from([0, 0, 0.25, 0.5, 0.75, 1, 2, 4]))
    fields: dict[str, Any] = {
        "cpu": draw(st.sampled_from([0, 0.5, 1, 2, 4, 8])),
        "ram_mb": draw(st.sampled_from([0, 512, 2048, 8192])),
        "gpus": gpus,
    }
    if gpus and draw(st.integers(0, 3)) == 0:
        fields["gpu_models"] = (draw(st.sampled_from(["A100", "H100", "T4"])),)
    if draw(st.integers(0, 5)) == 0:
        fields["resources"] = {"licenses": 1}
    selectors = ["zone=a", "tier!=spot", "hostname=w1", "zone in (a, b)"]
    fields["required"] = tuple(
        LabelSelector.parse(s) for s in draw(st.lists(st.sampled_from(selectors), max_size=1))
    )
    if draw(st.booleans()):
        selector = LabelSelector.parse(draw(st.sampled_from(["zone=b", "hostname=w2"])))
        fields["preferred"] = (PreferredLabel(selector=selector, weight=draw(st.integers(1, 9))),)
    return ResourceRequest(**fields)


POLICY = st.sampled_from(sorted(POLICIES))


def fresh_index(cls: ShapeClass, axis: Axis) -> list[int]:
    return sorted(filed(index_keys(w)[axis], seq) for seq, w in cls.members.items())


class KeptMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pool = ResourceAwareWorkerPool()
        self.names = 0

    @initialize(drawn=st.lists(specs(), min_size=2, max_size=8))
    def start(self, drawn: list[dict[str, Any]]) -> None:
        for spec in drawn:
            self.add(spec)

    @rule(spec=specs())
    def add(self, spec: dict[str, Any]) -> None:
        self.pool.add_worker({**spec, "name": f"w{self.names}"})
        self.names += 1

    @precondition(lambda self: len(self.pool) > 1)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        self.pool.remove_worker(data.draw(st.sampled_from(sorted(self.pool.workers))))

    @precondition(lambda self: len(self.pool) > 0)
    @rule(data=st.data(), spec=specs())
    def readvertise(self, data: st.DataObject, spec: dict[str, Any]) -> None:
        name = data.draw(st.sampled_from(sorted(self.pool.workers)))
        self.pool.update_worker({**spec, "name": name})

    @precondition(lambda self: len(self.pool) > 0)
    @rule(data=st.data(), ram=st.sampled_from([None, 0, 1024, 8192, 100000]))
    def observe(self, data: st.DataObject, ram: int | None) -> None:
        name = data.draw(st.sampled_from(sorted(self.pool.workers)))
        self.pool.observe(name, available_ram_mb=ram)

    @rule(request=requests(), policy=POLICY, repeat=st.integers(1, 4))
    def place(self, request: ResourceRequest, policy: str, repeat: int) -> None:
        for _ in range(repeat):
            self.same_answer(request, policy)
            result = self.pool.place(request, policy=policy)
            event("placed" if isinstance(result, Placement) else result.kind)

    @precondition(lambda self: self.pool.reservations())
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        keys = sorted(p.key for p in self.pool.reservations())
        self.pool.release(data.draw(st.sampled_from(keys)))

    @rule(request=requests(), policy=POLICY)
    def ask(self, request: ResourceRequest, policy: str) -> None:
        self.same_answer(request, policy)

    def same_answer(self, request: ResourceRequest, policy: str) -> None:
        """The live pool's answer is that of a copy that forgot everything it kept."""
        chosen = POLICIES[policy]
        forgetful = copy.deepcopy(self.pool)
        forgetful._stack.forget()
        kept = self.pool._stack.select(request, chosen)
        fresh = forgetful._stack.select(request, chosen)
        if isinstance(fresh, CannotPlace):
            assert kept == fresh
        else:
            assert not isinstance(kept, CannotPlace), kept
            assert (kept[1].worker.name, kept[1].devices) == (
                fresh[1].worker.name,
                fresh[1].devices,
            )

    @invariant()
    def indexes_are_in_order(self) -> None:
        pool = self.pool
        for cls in {id(c): c for c in [*pool._classes.values(), *pool._families.values()]}.values():
            for axis in Axis:
                assert cls.index(axis) == fresh_index(cls, axis), (cls.key, axis)
            if cls.grid is not None:
                grid = GpuGrid(len(cls.cap.gpu_models))
                for w in cls.members.values():
                    grid.add(w, grid_key(index_keys(w)))
                assert (cls.grid.whole, cls.grid.share) == (grid.whole, grid.share)


KeptMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestKeptMachine = KeptMachine.TestCase
