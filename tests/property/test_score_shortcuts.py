"""The shortcuts a GPU host's scoring takes give what the long way gives, to the last bit.

Ranking by fragmentation reads a host's free GPU from its device state and picks whole
devices itself, instead of summing the devices again (``leftover``) or asking the
ledger (``Ledger.fit``) for every candidate. A tie between two hosts is broken by these
numbers, so they must be equal, not close.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from coordinator.placement.fragment import _pick
from coordinator.placement.policies import Scale, leftover, spare
from coordinator.placement.workers import WorkerState
from shared.capacity import Demand
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
