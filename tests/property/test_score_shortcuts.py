"""The shortcuts a GPU host's scoring takes give what the long way gives, to the last bit.

Ranking by fragmentation reads a host's free GPU from its device state and picks whole
devices itself, instead of summing the devices again (``leftover``) or asking the
ledger (``Ledger.fit``) for every candidate. A tie between two hosts is broken by these
numbers, so they must be equal, not close.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from coordinator.placement.fragment import ClassTable, class_table
from coordinator.placement.fragment_score import _pick
from coordinator.placement.mix import MixTable, Shape
from coordinator.placement.policies import Scale, get_policy, leftover, spare
from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.placement.select import walk_members, walk_plain
from coordinator.placement.workers import WorkerState
from shared.capacity import Capacity, Demand
from shared.resources import GPUDevice, ResourceRequest, WorkerSpec


@st.composite
def busy_worker(draw: st.DrawFn) -> WorkerState:
    """A worker with some of its cores, RAM and devices taken."""
    devices = draw(st.integers(0, 8))
    spec = WorkerSpec(
        name="w",
        cpu=draw(st.integers(1, 128)),
        ram_mb=draw(st.integers(1, 1 << 20)),
        gpus=tuple(
            GPUDevice(index=i, model=draw(st.sampled_from(("A", "B"))), memory_mb=40960)
            for i in range(devices)
        ),
    )
    worker = WorkerState.create(spec, 0)
    for key in range(draw(st.integers(0, 6))):
        request = draw(requests(devices))
        demand = Demand.of(request)
        picked = worker.fit(demand)
        if picked is not None:
            worker.take(key, demand, picked)
    return worker


def requests(devices: int) -> st.SearchStrategy[ResourceRequest]:
    cpu_only = st.builds(ResourceRequest, cpu=st.integers(0, 16), ram_mb=st.integers(0, 65536))
    if not devices:
        return cpu_only
    gpu = st.builds(
        ResourceRequest,
        cpu=st.integers(0, 16),
        ram_mb=st.integers(0, 65536),
        gpus=st.sampled_from((0.1, 0.25, 0.5, 0.75, *range(1, devices + 1))),
        gpu_models=st.sampled_from(((), ("A",), ("A", "B"))),
    )
    return st.one_of(cpu_only, gpu)


scales = st.builds(
    Scale, cpu=st.integers(0, 256_000), ram=st.integers(0, 1 << 21), gpus=st.integers(0, 8)
)


@given(busy_worker(), st.data(), scales)
def test_spare_from_the_amounts_left_is_leftover(
    worker: WorkerState, data: st.DataObject, scale: Scale
) -> None:
    demand = Demand.of(data.draw(requests(len(worker.free_dev))))
    picked = worker.fit(demand)
    if picked is None:
        return
    gpu = sum(worker.free_dev) - demand.gpu_milli if worker.free_dev else None
    left = spare(worker.free_cpu - demand.cpu, worker.free_ram - demand.ram, gpu, scale)
    assert left == leftover(worker, demand, picked, scale)


@given(busy_worker(), st.data())
def test_whole_devices_are_picked_as_the_ledger_picks_them(
    worker: WorkerState, data: st.DataObject
) -> None:
    demand = Demand.of(data.draw(requests(len(worker.free_dev))))
    if demand.cpu > worker.free_cpu or demand.ram > worker.usable_ram() or demand.gpu_share:
        return
    assert _pick(worker, demand) == worker.fit(demand)


def reference_frag(ct: ClassTable, devices: tuple[int, ...], cpu: int, ram: int) -> float:
    """``frag`` as the module's docstring has it, from the free amounts, in plain ints."""
    total = sum(devices) * ct.base
    for (unit, slots), terms in zip(ct.levels, ct.terms, strict=True):
        free = [f for f in devices if f] if slots is None else [devices[s] for s in slots]
        units = sum(f // unit for f in free)
        small = sum(f for f in free if f < unit)
        for w_lambda, w_use, t_cpu, t_ram, count in terms:
            k = units // count
            if k:
                if t_cpu * k > cpu:
                    k = cpu // t_cpu
                if t_ram * k > ram:
                    k = ram // t_ram
                total += w_lambda * (small if k else sum(devices)) - k * w_use
            else:
                total += w_lambda * sum(devices)
    return total


shapes = st.tuples(
    st.integers(0, 16_000),
    st.integers(0, 65536),
    st.sampled_from((0, 0, 1, 2, 4)),
    st.sampled_from((0, 100, 250, 500)),
    st.sampled_from((frozenset(), frozenset({"A"}))),
    st.just(0),
).filter(lambda s: bool(s[2]) != bool(s[3]))


@given(
    st.lists(st.tuples(shapes, st.floats(0.01, 1)), min_size=1, max_size=8),
    st.lists(st.sampled_from(("A", "B")), min_size=1, max_size=8),
    st.data(),
)
def test_frag_is_the_plain_formula_to_the_last_bit(
    mix: list[tuple[Shape, float]], models: list[str], data: st.DataObject
) -> None:
    """The fast ``frag`` (floats and products read from tables) against the formula, also
    on hosts whose devices were taken beyond capacity (work adopted as it runs)."""
    cap = Capacity(96_000, 393_216, tuple(models), (40960,) * len(models), tuple(range(8)), ())
    ct = class_table(cap, MixTable(1, tuple(mix)), 1)
    free = st.one_of(st.sampled_from((0, 100, 250, 500, 750, 1000)), st.integers(-1000, 2000))
    for _ in range(5):
        devices = tuple(data.draw(st.lists(free, min_size=len(models), max_size=len(models))))
        if ct.uniform:
            devices = tuple(sorted(devices))
        cpu, ram = data.draw(st.integers(0, 96_000)), data.draw(st.integers(0, 393_216))
        sid = ct.state(devices)
        assert ct.frag(cpu, ram, sid) == reference_frag(ct, devices, cpu, ram)


@given(
    st.lists(
        st.tuples(st.integers(1, 16), st.integers(1, 64), st.integers(0, 2)),
        min_size=1,
        max_size=12,
    ),
    st.lists(st.tuples(st.integers(0, 11), st.integers(0, 8), st.integers(0, 32)), max_size=20),
    st.integers(0, 8),
    st.integers(0, 64),
    st.sampled_from(("hybrid", "binpack", "spread")),
)
def test_a_plain_walk_is_the_general_walk(
    hosts: list[tuple[int, int, int]],
    taken: list[tuple[int, int, int]],
    cpu: int,
    ram_gb: int,
    policy: str,
) -> None:
    """Work with no device, custom resource or per-host label walks members through
    ``walk_plain``, which spells out the fit and ``leftover``: the same answer."""
    specs = [
        {
            "name": f"h{i}",
            "cpu": c,
            "ram_mb": r * 1024,
            "gpus": [{"index": d, "model": "A"} for d in range(g)],
        }
        for i, (c, r, g) in enumerate(hosts)
    ]
    pool = ResourceAwareWorkerPool(specs)
    for n, (i, c, r) in enumerate(taken):
        if i < len(hosts):
            pool.adopt(f"h{i}", ResourceRequest(cpu=c, ram_mb=r * 1024), n, ())
    request = ResourceRequest(cpu=cpu, ram_mb=ram_gb * 1024)
    plan = pool._stack.plan(request)
    for group in plan.groups:
        for cls, weight, b in group:
            walks = get_policy(policy).walks(cls, b) if cls.has_room(b) else []
            for segment, walk in enumerate(walks):
                general = walk_members(cls, walk, segment, plan, 2, weight, 32)
                plain = walk_plain(cls, walk, segment, plan, 2, weight, 32)
                assert plain[1] == general[1]
                assert (plain[0] is None) == (general[0] is None)
                if plain[0] is not None and general[0] is not None:
                    assert plain[0].rank == general[0].rank
                    assert plain[0].worker is general[0].worker
                    assert plain[0].devices == general[0].devices
