"""Invariants of the default policy on GPU hosts, against a brute-force model.

The pool places by fragmentation on GPU hosts and keeps answers per request
and class between decisions (``fragment_select.py``). Whatever it kept, each
answer must be the one it would compute from scratch, never over-commit a
worker or a device, say busy exactly when some worker could hold the request
once free and none can now, infeasible exactly when none could ever hold it,
and explain a refusal as every other policy does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from coordinator.placement.outcome import CannotPlace, Placement
from coordinator.placement.pool import ResourceAwareWorkerPool
from shared.resources import ResourceRequest

WHOLE = 1000
MODELS = ("A", "B")


@dataclass
class Host:
    cpu: int
    ram: int
    devices: list[tuple[str, int]]  # (model, memory MB) per device index
    used_cpu: int = 0
    used_ram: int = 0
    used_dev: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Ask:
    cpu: int
    ram: int
    gpu: int  # milli: < 1000 a share of one device, else whole devices
    models: frozenset[str]
    mem: int

    def eligible(self, device: tuple[str, int]) -> bool:
        return (not self.models or device[0] in self.models) and device[1] >= self.mem


def fits(h: Host, a: Ask, *, empty: bool = False) -> bool:
    cpu = h.cpu - (0 if empty else h.used_cpu)
    ram = h.ram - (0 if empty else h.used_ram)
    if a.cpu > cpu or a.ram > ram:
        return False
    free = [WHOLE - (0 if empty else h.used_dev.get(i, 0)) for i in range(len(h.devices))]
    ok = [f for f, d in zip(free, h.devices, strict=True) if a.eligible(d)]
    if not a.gpu:
        return True
    if a.gpu < WHOLE:
        return any(f >= a.gpu for f in ok)
    return sum(1 for f in ok if f == WHOLE) >= a.gpu // WHOLE


@st.composite
def hosts(draw: st.DrawFn) -> tuple[dict[str, Any], Host]:
    cpu = draw(st.sampled_from([2, 4, 8, 16, 32]))
    ram = draw(st.sampled_from([8192, 32768]))
    count = draw(st.sampled_from([0, 1, 2, 2, 4, 8]))
    model = draw(st.sampled_from(MODELS))
    devices = [
        (draw(st.sampled_from(MODELS)) if draw(st.booleans()) else model, mem)
        for mem in draw(
            st.lists(st.sampled_from([16384, 40960, 81920]), min_size=count, max_size=count)
        )
    ]
    spec = {
        "cpu": cpu,
        "ram_mb": ram,
        "gpus": [{"index": i, "model": m, "memory_mb": mem} for i, (m, mem) in enumerate(devices)],
    }
    return spec, Host(cpu * WHOLE, ram, devices)


@st.composite
def asks(draw: st.DrawFn) -> tuple[ResourceRequest, Ask]:
    cpu = draw(st.sampled_from([0, 0.5, 1, 2, 4, 8]))
    ram = draw(st.sampled_from([0, 1024, 4096, 16384]))
    gpus = draw(st.sampled_from([0, 0.1, 0.25, 0.5, 0.75, 1, 1, 2, 4]))
    models: tuple[str, ...] = ()
    mem = 0
    if gpus and draw(st.booleans()):
        models = tuple(draw(st.sets(st.sampled_from(MODELS), min_size=1)))
    if gpus and draw(st.integers(0, 3)) == 0:
        mem = 40000
    request = ResourceRequest(cpu=cpu, ram_mb=ram, gpus=gpus, gpu_models=models, gpu_mem_mb=mem)
    return request, Ask(round(cpu * WHOLE), ram, round(gpus * WHOLE), frozenset(models), mem)


class FragmentMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pool = ResourceAwareWorkerPool()  # the default policy
        self.hosts: dict[str, Host] = {}
        self.live: dict[int, tuple[Placement, Ask]] = {}
        self.next_key = 0

    @initialize(specs=st.lists(hosts(), min_size=1, max_size=6))
    def start(self, specs: list[tuple[dict[str, Any], Host]]) -> None:
        for spec, model in specs:
            self.hosts[self.pool.add_worker(spec)] = model

    @rule(drawn=hosts())
    def add_host(self, drawn: tuple[dict[str, Any], Host]) -> None:
        spec, model = drawn
        self.hosts[self.pool.add_worker(spec)] = model

    @precondition(lambda self: len(self.hosts) > 1)
    @rule(data=st.data())
    def remove_host(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.hosts)))
        gone = {p.key for p in self.pool.remove_worker(name)}
        assert gone == {k for k, (p, _) in self.live.items() if p.worker == name}
        for key in gone:
            del self.live[key]
        del self.hosts[name]

    def fresh_answer(self, request: ResourceRequest) -> Any:
        """What the stack decides with every kept answer and score forgotten."""
        self.pool._stack.forget()
        return self.pool._stack.select(request, self.pool.policy)

    @rule(drawn=asks(), repeat=st.integers(1, 3))
    def place(self, drawn: tuple[ResourceRequest, Ask], repeat: int) -> None:
        request, ask = drawn
        for _ in range(repeat):
            kept = self.pool._stack.select(request, self.pool.policy)
            fresh = self.fresh_answer(request)
            if isinstance(fresh, CannotPlace):
                assert kept == fresh
            else:
                assert not isinstance(kept, CannotPlace)
                assert (kept[1].worker, kept[1].devices) == (fresh[1].worker, fresh[1].devices)
            self.place_once(request, ask)

    def place_once(self, request: ResourceRequest, ask: Ask) -> None:
        fit_now = [n for n, h in self.hosts.items() if fits(h, ask)]
        can_hold = [n for n, h in self.hosts.items() if fits(h, ask, empty=True)]
        key = self.next_key
        self.next_key += 1
        result = self.pool.place(request, key=key)
        if isinstance(result, Placement):
            event("placed")
            assert result.worker in fit_now
            self.take(result, ask)
            return
        event(result.kind)
        assert not fit_now, f"{result.kind} but {fit_now} could take {request}"
        assert result.kind == ("busy" if can_hold else "infeasible")
        for other in ("binpack", "spread"):
            assert self.pool.place(request, key=f"{key}-{other}", policy=other) == result

    def take(self, p: Placement, ask: Ask) -> None:
        h = self.hosts[p.worker]
        expected = 0 if not ask.gpu else 1 if ask.gpu < WHOLE else ask.gpu // WHOLE
        assert len(set(p.gpu_devices)) == len(p.gpu_devices) == expected
        for index in p.gpu_devices:
            assert ask.eligible(h.devices[index])
            h.used_dev[index] = h.used_dev.get(index, 0) + min(ask.gpu, WHOLE)
        h.used_cpu += ask.cpu
        h.used_ram += ask.ram
        self.live[p.key] = (p, ask)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.live)))
        p, ask = self.live.pop(key)
        assert self.pool.release(key) == p
        h = self.hosts[p.worker]
        h.used_cpu -= ask.cpu
        h.used_ram -= ask.ram
        for index in p.gpu_devices:
            h.used_dev[index] -= min(ask.gpu, WHOLE)

    @invariant()
    def nothing_over_committed(self) -> None:
        for name, h in self.hosts.items():
            assert h.used_cpu <= h.cpu
            assert h.used_ram <= h.ram
            assert all(0 <= used <= WHOLE for used in h.used_dev.values())
            usage = self.pool.usage(name)
            assert round(usage.cpu_free * WHOLE) == h.cpu - h.used_cpu
            assert [round((1 - d.free) * WHOLE) for d in usage.devices] == [
                h.used_dev.get(i, 0) for i in range(len(h.devices))
            ]


FragmentMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestFragmentMachine = FragmentMachine.TestCase
