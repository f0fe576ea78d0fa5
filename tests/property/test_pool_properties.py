"""Stateful properties of ResourceAwareWorkerPool against an independent reference model.

The model below never looks inside the pool: it recomputes every worker's use
from the list of live Placements (worker name, advertised device indexes and the
request) and the worker specs it generated, in its own integer units, and
judges every answer of ``place`` (placement, busy or infeasible) by brute force
over all live workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from coordinator.placement.outcome import CannotPlace, Placement
from coordinator.placement.pool import ResourceAwareWorkerPool
from shared.labels import LabelSelector, Op, PreferredLabel
from shared.resources import ResourceRequest

WHOLE = 1000  # one device, one core, one unit of a custom resource, in milli-units

# -- the reference model ------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    index: int
    model: str
    memory_mb: int


@dataclass
class WorkerModel:
    name: str
    cpu: int  # milli-cores
    ram: int  # MB
    devices: tuple[Device, ...]
    custom: dict[str, int]  # milli-units
    labels: dict[str, str]

    @property
    def has_gpu(self) -> bool:
        return bool(self.devices)


# A selector as the model understands it: (key, op, values), matched by `selector_ok`.
Sel = tuple[str, str, tuple[str, ...]]


@dataclass(frozen=True)
class RequestModel:
    cpu: int
    ram: int
    gpu: int  # milli-devices: < 1000 a share of one device, else a multiple of 1000
    gpu_models: frozenset[str]
    gpu_mem: int
    custom: dict[str, int]
    required: tuple[Sel, ...]
    preferred: tuple[tuple[Sel, int], ...]


def selector_ok(sel: Sel, labels: dict[str, str]) -> bool:
    key, op, values = sel
    present = key in labels
    if op == "exists":
        return present
    if op in ("equals", "in"):
        return present and labels[key] in values
    assert op == "not_in"
    return not present or labels[key] not in values


def device_ok(d: Device, r: RequestModel) -> bool:
    return (not r.gpu_models or d.model in r.gpu_models) and d.memory_mb >= r.gpu_mem


@dataclass
class Free:
    cpu: int
    ram: int
    devices: dict[int, int]  # advertised index -> free milli-share
    custom: dict[str, int]


def fits(w: WorkerModel, free: Free, r: RequestModel) -> bool:
    """Whether ``r`` fits ``w`` given ``free`` amounts (its totals or its spare now)."""
    if not all(selector_ok(s, w.labels) for s in r.required):
        return False
    if r.cpu > free.cpu or r.ram > free.ram:
        return False
    if any(amount > free.custom.get(name, 0) for name, amount in r.custom.items()):
        return False
    if r.gpu == 0:
        return True
    eligible = [d for d in w.devices if device_ok(d, r)]
    if r.gpu < WHOLE:
        return any(free.devices[d.index] >= r.gpu for d in eligible)
    return sum(1 for d in eligible if free.devices[d.index] == WHOLE) >= r.gpu // WHOLE


def totals(w: WorkerModel) -> Free:
    return Free(w.cpu, w.ram, {d.index: WHOLE for d in w.devices}, dict(w.custom))


def pref_weight(w: WorkerModel, r: RequestModel) -> int:
    return sum(weight for sel, weight in r.preferred if selector_ok(sel, w.labels))


# -- strategies ---------------------------------------------------------------------

MODELS = ("A100", "H100", "T4")
MEMORY = (0, 16000, 40000, 80000)

# Selectors the requests may state: text for the pool, (key, op, values) for the model.
REQUIRED: tuple[tuple[str, Sel], ...] = (
    ("zone=eu", ("zone", "equals", ("eu",))),
    ("zone!=eu", ("zone", "not_in", ("eu",))),
    ("zone in (eu, us)", ("zone", "in", ("eu", "us"))),
    ("tier notin (spot)", ("tier", "not_in", ("spot",))),
    ("tier=spot", ("tier", "equals", ("spot",))),
    ("ssd", ("ssd", "exists", ())),
    ("ssd=true", ("ssd", "equals", ("true",))),
    ("hostname=w1", ("hostname", "equals", ("w1",))),
    ("hostname!=w0", ("hostname", "not_in", ("w0",))),
    ("unique.rack=r1", ("unique.rack", "equals", ("r1",))),
    ("unique.rack notin (r2)", ("unique.rack", "not_in", ("r2",))),
)
# Preferences use the same selectors, per-host labels (hostname, unique.*) included.
PREFERRED = REQUIRED

_OPS = {"equals": Op.EQUALS, "in": Op.IN, "not_in": Op.NOT_IN, "exists": Op.EXISTS}


def to_selector(text: str, sel: Sel) -> LabelSelector:
    key, op, values = sel
    built = LabelSelector(key=key, op=_OPS[op], values=values)
    assert LabelSelector.parse(text) == built  # the syntax agrees with the table
    return built


@st.composite
def worker_specs(draw: st.DrawFn, name: str) -> tuple[dict[str, Any], WorkerModel]:
    cpu_milli = draw(st.sampled_from([0, 500, 1500, 2000, 4000, 4000, 8000, 8000, 16000]))
    ram = draw(st.sampled_from([0, 1024, 4096, 8192, 8192, 16384]))
    indexes = draw(st.lists(st.integers(0, 7), max_size=4, unique=True))
    devices = tuple(
        Device(i, draw(st.sampled_from(MODELS)), draw(st.sampled_from(MEMORY))) for i in indexes
    )
    custom = draw(
        st.dictionaries(
            st.sampled_from(["licenses", "fpga"]), st.sampled_from([500, 1000, 2000, 3000])
        )
    )
    labels: dict[str, str] = {}
    spec_labels: dict[str, Any] = {}
    for key, values in (("zone", ("eu", "us")), ("tier", ("spot", "ondemand"))):
        value = draw(st.none() | st.sampled_from(values))
        if value is not None:
            labels[key] = spec_labels[key] = value
    if draw(st.booleans()):
        labels["ssd"] = "true"
        spec_labels["ssd"] = True  # normalised to "true" by the pool
    if draw(st.booleans()):
        labels["hostname"] = spec_labels["hostname"] = name
    rack = draw(st.none() | st.sampled_from(["r1", "r2"]))
    if rack is not None:
        labels["unique.rack"] = spec_labels["unique.rack"] = rack
    spec: dict[str, Any] = {
        "name": name,
        "ram_mb": ram,
        "gpus": [{"index": d.index, "model": d.model, "memory_mb": d.memory_mb} for d in devices],
        "resources": {k: v / WHOLE for k, v in custom.items()},
        "labels": spec_labels,
    }
    spec["cpu_cores" if draw(st.booleans()) else "cpu"] = cpu_milli / WHOLE
    model = WorkerModel(name, cpu_milli, ram, devices, custom, labels)
    return spec, model


@st.composite
def requests(draw: st.DrawFn) -> tuple[ResourceRequest, RequestModel]:
    cpu = draw(st.sampled_from([0, 250, 500, 1000, 1500, 2000, 4000, 8000]))
    ram = draw(st.sampled_from([0, 0, 512, 1024, 4096, 8192]))
    gpu = draw(st.sampled_from([0, 0, 0, 100, 250, 300, 500, 600, 750, 1000, 1000, 2000, 3000]))
    models: frozenset[str] = frozenset()
    gpu_mem = 0
    if gpu:
        if draw(st.booleans()):
            models = frozenset(draw(st.sets(st.sampled_from(MODELS), min_size=1, max_size=2)))
        gpu_mem = draw(st.sampled_from([0, 0, 0, 20000, 50000]))
    custom: dict[str, int] = {}
    if draw(st.integers(0, 3)) == 0:
        name = draw(st.sampled_from(["licenses", "fpga"]))
        custom[name] = draw(st.sampled_from([500, 1000, 2000]))
    required = []
    if draw(st.booleans()):
        required = draw(st.lists(st.sampled_from(REQUIRED), min_size=1, max_size=2, unique=True))
    preferred = draw(
        st.lists(
            st.tuples(st.sampled_from(PREFERRED), st.integers(1, 100)),
            max_size=2,
            unique_by=lambda p: p[0][0],
        )
    )
    policy = draw(st.sampled_from([None, "binpack", "spread", "hybrid"]))
    request = ResourceRequest(
        cpu=cpu / WHOLE,
        ram_mb=ram,
        gpus=gpu / WHOLE,
        gpu_models=tuple(sorted(models)),
        gpu_mem_mb=gpu_mem,
        resources={k: v / WHOLE for k, v in custom.items()},
        required=tuple(to_selector(text, sel) for text, sel in required),
        preferred=tuple(
            PreferredLabel(selector=to_selector(text, sel), weight=w)
            for (text, sel), w in preferred
        ),
        policy=policy,
    )
    model = RequestModel(
        cpu=cpu,
        ram=ram,
        gpu=gpu,
        gpu_models=models,
        gpu_mem=gpu_mem,
        custom=custom,
        required=tuple(sel for _, sel in required),
        preferred=tuple((sel, w) for (_, sel), w in preferred),
    )
    return request, model


# -- the state machine -------------------------------------------------------------------

DIMENSIONS = {"labels", "cpu", "ram_mb", "resources", "gpus", "gpu_models", "gpu_mem_mb"}


@dataclass
class Live:
    placement: Placement
    request: RequestModel


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pool = ResourceAwareWorkerPool(policy="hybrid")
        self.workers: dict[str, WorkerModel] = {}
        self.live: dict[str, Live] = {}
        self.next_worker = 0
        self.next_key = 0
        self.last: tuple[ResourceRequest, RequestModel] | None = None

    # -- the model's view of use -----------------------------------------------------

    def used_on(self, name: str) -> Free:
        """What the live placements on ``name`` take, from the Placements alone."""
        used = Free(0, 0, {d.index: 0 for d in self.workers[name].devices}, {})
        for item in self.live.values():
            if item.placement.worker != name:
                continue
            r = item.request
            used.cpu += r.cpu
            used.ram += r.ram
            for k, v in r.custom.items():
                used.custom[k] = used.custom.get(k, 0) + v
            share = r.gpu if r.gpu < WHOLE else WHOLE
            for index in item.placement.gpu_devices:
                # an index the worker never advertised fails loudly here
                used.devices[index] = used.devices[index] + share
        return used

    def free_now(self, name: str) -> Free:
        w, used = self.workers[name], self.used_on(name)
        return Free(
            w.cpu - used.cpu,
            w.ram - used.ram,
            {i: WHOLE - used.devices[i] for i in used.devices},
            {k: v - used.custom.get(k, 0) for k, v in w.custom.items()},
        )

    # -- rules ------------------------------------------------------------------------

    @initialize(n=st.integers(1, 4), data=st.data())
    def start(self, n: int, data: st.DataObject) -> None:
        for _ in range(n):
            self.add_worker(data)

    @rule(data=st.data())
    def add_worker(self, data: st.DataObject) -> None:
        name = f"w{self.next_worker}"
        self.next_worker += 1
        spec, model = data.draw(worker_specs(name))
        assert self.pool.add_worker(spec) == name
        self.workers[name] = model
        u = self.pool.usage(name)
        assert round(u.cpu * WHOLE) == model.cpu
        assert u.ram_mb == model.ram
        assert u.labels == model.labels
        assert [(d.index, d.model, d.memory_mb) for d in u.devices] == [
            (d.index, d.model, d.memory_mb) for d in model.devices
        ]

    @precondition(lambda self: self.workers)
    @rule(data=st.data())
    def remove_worker(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.workers)))
        expected = {k for k, item in self.live.items() if item.placement.worker == name}
        returned = self.pool.remove_worker(name)
        assert {p.key for p in returned} == expected
        assert all(p == self.live[p.key].placement for p in returned)
        for key in expected:
            del self.live[key]
        del self.workers[name]
        assert name not in self.pool

    @rule(drawn=requests(), per_call=st.sampled_from([None, None, "binpack", "spread", "hybrid"]))
    def place(self, drawn: tuple[ResourceRequest, RequestModel], per_call: str | None) -> None:
        request, r = drawn
        self.last = drawn
        key = f"k{self.next_key}"
        self.next_key += 1
        can_hold = [n for n, w in self.workers.items() if fits(w, totals(w), r)]
        fit_now = [n for n, w in self.workers.items() if fits(w, self.free_now(n), r)]
        result = self.pool.place(request, key=key, policy=per_call)

        if isinstance(result, Placement):
            event("placed " + ("cpu-only" if not r.gpu else "share" if r.gpu < WHOLE else "whole"))
            assert result.key == key
            assert result.request == request
            assert result.worker in fit_now, f"{result.worker} had no room for {request}"
            self.check_preference(result.worker, fit_now, r)
            self.live[key] = Live(result, r)
            self.check_placement(self.live[key])
            return

        assert isinstance(result, CannotPlace)
        event(result.kind)
        assert fit_now == [], f"{result.kind} but {fit_now} could take {request} now"
        assert self.pool.reservation(key) is None
        if result.kind == "infeasible":
            assert can_hold == [], f"infeasible but {can_hold} could hold {request}"
        else:
            assert result.kind == "busy"
            assert can_hold, f"busy but no worker could ever hold {request}"
            assert result.reasons
            assert set(result.reasons) <= DIMENSIONS
            assert result.nearest
            for candidate in result.nearest:
                assert candidate.worker in self.workers
                assert candidate.missing
                assert {m.dimension for m in candidate.missing} <= DIMENSIONS

    @precondition(lambda self: self.last is not None)
    @rule(per_call=st.sampled_from([None, "binpack", "spread", "hybrid"]))
    def place_again(self, per_call: str | None) -> None:
        """The same request once more: builds contention and exercises cached plans."""
        assert self.last is not None
        self.place(self.last, per_call)

    def check_preference(self, chosen: str, fit_now: list[str], r: RequestModel) -> None:
        """CPU-only work avoids GPU hosts; then more preferred weight wins."""
        w = self.workers[chosen]
        if r.gpu == 0 and w.has_gpu:
            assert all(self.workers[n].has_gpu for n in fit_now), (
                f"CPU-only work went to GPU host {chosen} while a non-GPU host had room"
            )
        same_tier = [n for n in fit_now if r.gpu or self.workers[n].has_gpu == w.has_gpu]
        best = max(pref_weight(self.workers[n], r) for n in same_tier)
        assert pref_weight(w, r) == best, f"{chosen} is not among the most preferred"

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.live)))
        assert self.pool.release(key) == self.live.pop(key).placement
        assert self.pool.reservation(key) is None

    @precondition(lambda self: self.live)
    @rule()
    def release_all(self) -> None:
        self.release_everything()

    def release_everything(self) -> None:
        for key in sorted(self.live):
            assert self.pool.release(key) == self.live.pop(key).placement
        assert self.pool.reservations() == []
        for name, w in self.workers.items():
            u = self.pool.usage(name)
            assert u.cpu_free == w.cpu / WHOLE
            assert u.ram_free_mb == w.ram
            assert [(d.index, d.free) for d in u.devices] == [(d.index, 1.0) for d in w.devices]
            assert u.resources_free == {k: v / WHOLE for k, v in w.custom.items()}
            assert u.reservations == 0

    def teardown(self) -> None:
        self.release_everything()

    # -- invariants ---------------------------------------------------------------------

    def check_placement(self, item: Live) -> None:
        p, r = item.placement, item.request
        w = self.workers[p.worker]
        assert all(selector_ok(s, w.labels) for s in r.required), (p, w.labels)
        by_index = {d.index: d for d in w.devices}
        assert all(i in by_index for i in p.gpu_devices), (p.gpu_devices, by_index)
        assert len(set(p.gpu_devices)) == len(p.gpu_devices)
        expected = 0 if r.gpu == 0 else 1 if r.gpu < WHOLE else r.gpu // WHOLE
        assert len(p.gpu_devices) == expected
        assert all(device_ok(by_index[i], r) for i in p.gpu_devices)

    @invariant()
    def nothing_over_committed(self) -> None:
        for name, w in self.workers.items():
            used = self.used_on(name)
            assert used.cpu <= w.cpu
            assert used.ram <= w.ram
            for k, v in used.custom.items():
                assert v <= w.custom.get(k, 0), (name, k)
            assert all(share <= WHOLE for share in used.devices.values()), used.devices

    @invariant()
    def placements_are_valid(self) -> None:
        for item in self.live.values():
            assert item.placement.worker in self.workers
            self.check_placement(item)

    @invariant()
    def pool_agrees_with_model(self) -> None:
        assert sorted(map(str, (p.key for p in self.pool.reservations()))) == sorted(self.live)
        for name in self.workers:
            free, u = self.free_now(name), self.pool.usage(name)
            assert u.cpu_free == free.cpu / WHOLE
            assert u.ram_free_mb == free.ram
            assert {d.index: d.free for d in u.devices} == {
                i: v / WHOLE for i, v in free.devices.items()
            }
            assert u.resources_free == {k: v / WHOLE for k, v in free.custom.items()}
            mine = sorted(k for k, item in self.live.items() if item.placement.worker == name)
            assert u.reservations == len(mine)
            assert sorted(str(p.key) for p in self.pool.reservations(name)) == mine


PoolMachine.TestCase.settings = settings(
    max_examples=500,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPoolMachine = PoolMachine.TestCase
