"""ResourceAwareWorkerPool: the live view of every worker and every reservation.

Pure by design: no I/O, no clock, no asyncio. The coordinator's NATS service
feeds it events (a worker advertised, left, reported usage) and asks it for
decisions (place this request, release that reservation); unit tests and the
10,000-worker simulator drive it the same way.

The pool keeps the books: workers, their shape classes and indexes, and the
reservations. A decision is the placement stack's (``stack.py``, where every
stage is listed in the order it runs: feasibility with task routing,
preference, named hosts, walk, rank, explain); the pool only applies the
winner.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from coordinator.placement.mix import RequestMix
from coordinator.placement.outcome import CannotPlace, Placement, PlaceResult, new_placement
from coordinator.placement.policies import Policy, get_policy
from coordinator.placement.shapes import (
    ShapeClass,
    ShapeKey,
    family_key,
    is_unique_label,
    rekey,
    shape_key,
)
from coordinator.placement.stack import Stack
from coordinator.placement.usage import WorkerUsage, usage_of
from coordinator.placement.workers import WorkerState
from shared.capacity import Demand, DevicePick
from shared.resources import ResourceRequest, WorkerSpec


class ResourceAwareWorkerPool:
    """Workers, their free capacity, and the reservations held on them.

    ``workers`` takes ``WorkerSpec`` objects or the documents' dicts, e.g.
    ``{"cpu_cores": 8, "ram_gb": 32, "labels": {"gpu": True}}``; unnamed
    workers are called ``worker-0``, ``worker-1``, ...
    """

    def __init__(
        self,
        workers: Iterable[WorkerSpec | Mapping[str, Any]] = (),
        *,
        policy: str | Policy | None = None,
    ) -> None:
        self.policy = get_policy(policy)
        self._workers: dict[str, WorkerState] = {}
        self._classes: dict[ShapeKey, ShapeClass] = {}
        self._families: dict[ShapeKey, ShapeClass] = {}
        self._class_of: dict[str, ShapeClass] = {}
        self._family_of: dict[str, ShapeClass] = {}
        self._kinds: dict[ShapeKey, list[ShapeClass]] = {}
        """The classes of each family (same totals and devices, any labels)."""
        self._hosts: dict[tuple[str, str], set[str]] = {}
        self._held: dict[Hashable, Placement] = {}
        self.mix = RequestMix()
        self._stack = Stack(
            self._workers, self._classes, self._families, self._class_of, self._hosts, self.mix
        )
        self._seq = itertools.count()
        self._keys = itertools.count()
        self.placed = 0
        """Placements made by ``place`` (metrics read it)."""
        self.answers: Counter[tuple[str, str]] = Counter()
        """Busy and infeasible answers of ``place`` and ``check`` by (kind, dimension named),
        as Nomad counts every rejection under its reason (metrics read it)."""
        for spec in workers:
            self.add_worker(spec)

    # -- membership -------------------------------------------------------

    def add_worker(self, spec: WorkerSpec | Mapping[str, Any]) -> str:
        """Add a worker; returns its name. A name already present is an error."""
        spec = WorkerSpec.model_validate(spec)
        seq = next(self._seq)
        if not spec.name:
            spec = spec.model_copy(update={"name": f"worker-{seq}"})
        if spec.name in self._workers:
            raise ValueError(f"worker {spec.name!r} is already in the pool; use update_worker")
        worker = WorkerState.create(spec, seq)
        self._workers[spec.name] = worker
        self._attach(worker)
        return spec.name

    def update_worker(self, spec: WorkerSpec | Mapping[str, Any]) -> list[Placement]:
        """Replace a worker's advertised totals and labels, keeping its reservations.

        Reservations on GPU devices or custom resources that disappeared cannot be
        kept: they are released and returned so the caller can place that work again.
        Shrunk CPU or RAM may leave the worker over-committed; it then takes
        nothing new until enough is released.
        """
        spec = WorkerSpec.model_validate(spec)
        old = self._known(spec.name)
        kept = {k: self._held[k] for k in old.held}
        self._detach(old)
        worker = WorkerState.create(spec, old.seq)
        worker.stamp = old.stamp + 1  # answers kept for the old state must not match the new
        self._workers[spec.name] = worker
        evicted: list[Placement] = []
        for key, placement in kept.items():
            demand = Demand.of(placement.request)
            devices = _same_devices(old, worker, old.held[key].devices, demand)
            if devices is None or any(not worker.cap.custom_amount(n) for n, _ in demand.custom):
                del self._held[key]
                evicted.append(placement)
            else:
                worker.take(key, demand, devices)
        worker.live_ram = old.live_ram
        self._attach(worker)
        return evicted

    def remove_worker(self, name: str) -> list[Placement]:
        """Remove a lost or departed worker; returns the reservations it held."""
        worker = self._known(name)
        del self._workers[name]
        self._detach(worker)
        return [self._held.pop(key) for key in list(worker.held)]

    def observe(self, name: str, *, available_ram_mb: int | None) -> None:
        """Record a host's real free memory; nothing is placed beyond it."""
        worker = self._known(name)
        worker.live_ram = available_ram_mb
        self._reindex(worker, gpu=False)

    # -- decisions --------------------------------------------------------

    def place(
        self,
        request: ResourceRequest,
        *,
        key: Hashable | None = None,
        policy: str | Policy | None = None,
    ) -> PlaceResult:
        """Reserve capacity for ``request`` on the best worker, or say why not.

        ``key`` names the reservation (the coordinator uses run, node and
        attempt); without one a fresh integer is used. The policy is, in
        order: the argument, the request's own, the pool's.
        """
        if key is None:
            key = next(self._keys)
            while key in self._held:
                key = next(self._keys)
        elif key in self._held:
            raise ValueError(f"reservation {key!r} is already held")
        chosen = get_policy(policy or request.policy) if policy or request.policy else self.policy
        found = self._stack.select(request, chosen)
        if isinstance(found, CannotPlace):
            if not found.infeasible:
                self.mix.record(self._stack.plan(request).demand, key, placed=False)
            return self._answered(found)
        self.placed += 1
        demand, best = found
        if demand.gpu_whole or demand.gpu_share:  # the mix counts GPU requests only
            self.mix.record(demand, key, placed=True)
        worker, devices = best.worker, best.devices
        worker.take(key, demand, devices)
        self._reindex(worker, bool(devices))
        worker.before = best.after  # what scoring it next would find first
        made = new_placement(key, worker.name, worker.device_ids(devices), request)
        self._held[key] = made
        return made

    def check(self, request: ResourceRequest) -> CannotPlace | None:
        """None when some live worker could hold ``request`` once free; else why not.

        Nothing is reserved: this is the submit-time feasibility check of every DAG node.
        """
        answer = self._stack.check(request)
        return None if answer is None else self._answered(answer)

    def adopt(
        self, name: str, request: ResourceRequest, key: Hashable, gpu_devices: tuple[int, ...]
    ) -> Placement:
        """Account work a worker reports running, e.g. after a coordinator restart.

        It is running whether or not it fits, so it is taken even beyond free capacity;
        the worker then takes nothing new until enough is released. When the devices it
        runs on are not known, it is charged for the devices a placement would pick (or
        the freest ones): a GPU task adopted without its devices would leave them free
        for another whole-device task.
        """
        if key in self._held:
            raise ValueError(f"reservation {key!r} is already held")
        worker = self._known(name)
        demand = Demand.of(request)
        devices = _adopted_devices(worker, demand, gpu_devices)
        worker.take(key, demand, devices)
        self._reindex(worker, gpu=bool(devices))
        placement = Placement(key, name, worker.device_ids(devices), request)
        self._held[key] = placement
        return placement

    def release(self, key: Hashable) -> Placement:
        """Give back exactly what reservation ``key`` took; returns it."""
        placement = self._held.pop(key, None)
        if placement is None:
            raise KeyError(f"no reservation {key!r} is held")
        worker = self._workers[placement.worker]
        hold = worker.give_back(key)
        self._reindex(worker, gpu=bool(hold.devices))
        return placement

    # -- queries ----------------------------------------------------------

    @property
    def workers(self) -> list[str]:
        return list(self._workers)

    def __len__(self) -> int:
        return len(self._workers)

    def __contains__(self, name: object) -> bool:
        return name in self._workers

    def usage(self, name: str) -> WorkerUsage:
        """Capacity, reserved and free of one worker, in user units."""
        return usage_of(self._known(name))

    def reservations(self, name: str | None = None) -> list[Placement]:
        if name is None:
            return list(self._held.values())
        return [self._held[k] for k in self._known(name).held]

    def reservation(self, key: Hashable) -> Placement | None:
        return self._held.get(key)

    # -- internals --------------------------------------------------------

    def _answered(self, answer: CannotPlace) -> CannotPlace:
        for dimension in answer.reasons or ("no_workers",):
            self.answers[(answer.kind, dimension)] += 1
        return answer

    def _known(self, name: str) -> WorkerState:
        worker = self._workers.get(name)
        if worker is None:
            raise KeyError(f"no worker {name!r} in the pool")
        return worker

    def _attach(self, worker: WorkerState) -> None:
        cls = self._join(self._classes, shape_key(worker), worker)
        self._class_of[worker.name] = cls
        self._family_of[worker.name] = self._join_family(family_key(worker), cls, worker)
        for label in worker.labels.items():
            if is_unique_label(label[0]):
                self._hosts.setdefault(label, set()).add(worker.name)

    def _detach(self, worker: WorkerState) -> None:
        cls, family = self._class_of.pop(worker.name), self._family_of.pop(worker.name)
        if family is not cls:
            family.remove(worker)
        self._leave(self._classes, cls, worker)
        self._leave_family(family_key(worker), cls)
        for label in worker.labels.items():
            names = self._hosts.get(label)
            if names is not None:
                names.discard(worker.name)
                if not names:
                    del self._hosts[label]

    def _join(self, index: dict[ShapeKey, ShapeClass], key: ShapeKey, w: WorkerState) -> ShapeClass:
        cls = index.get(key)
        if cls is None:
            cls = index[key] = ShapeClass(key)
            self._stack.reshaped()
        cls.add(w)
        return cls

    def _leave(self, index: dict[ShapeKey, ShapeClass], cls: ShapeClass, w: WorkerState) -> None:
        cls.remove(w)
        if not cls.members:
            del index[cls.key]
            self._stack.reshaped()

    # A family with one class is that class (the common case of a fleet without labels):
    # one set of indexes to keep, not two. A second class of the same totals gets the
    # family its own indexes; when one class is left again, the family is that class.

    def _join_family(self, key: ShapeKey, cls: ShapeClass, w: WorkerState) -> ShapeClass:
        kinds = self._kinds.setdefault(key, [])
        if cls not in kinds:
            kinds.append(cls)
        family = self._families.get(key)
        if len(kinds) == 1:
            if family is None:
                self._families[key] = cls
                self._stack.reshaped()
            return cls
        if family is None or family in kinds:
            family = self._families[key] = ShapeClass(key)
            for member in itertools.chain.from_iterable(c.members.values() for c in kinds):
                family.add(member)
                self._family_of[member.name] = family
            self._stack.reshaped()
            return family
        family.add(w)
        return family

    def _leave_family(self, key: ShapeKey, cls: ShapeClass) -> None:
        kinds = self._kinds[key]
        if not cls.members:
            kinds.remove(cls)
        if not kinds:
            del self._kinds[key], self._families[key]
        elif len(kinds) == 1 and self._families[key] is not kinds[0]:
            self._families[key] = kinds[0]
            for member in kinds[0].members.values():
                self._family_of[member.name] = kinds[0]
            self._stack.reshaped()

    def _reindex(self, worker: WorkerState, gpu: bool) -> None:
        worker.stamp += 1
        if worker.scores:
            worker.scores.clear()
        worker.before = None
        name = worker.name
        cls, family = self._class_of[name], self._family_of[name]
        old = worker.index_keys
        new = rekey(worker, gpu)
        cls.refile(worker, old, new)
        if family is not cls:
            family.refile(worker, old, new)


def _same_devices(
    old: WorkerState, new: WorkerState, devices: DevicePick, demand: Demand
) -> DevicePick | None:
    """The same advertised devices on the updated worker, if all are still there and qualify."""
    slot_of = {index: slot for slot, index in enumerate(new.cap.gpu_index)}
    moved = []
    for slot, milli in devices:
        new_slot = slot_of.get(old.cap.gpu_index[slot])
        if new_slot is None or not new.cap.device_ok(new_slot, demand):
            return None
        moved.append((new_slot, milli))
    return tuple(moved)


def _adopted_devices(
    worker: WorkerState, demand: Demand, gpu_devices: tuple[int, ...]
) -> DevicePick:
    slot_of = {index: slot for slot, index in enumerate(worker.cap.gpu_index)}
    given = tuple((slot_of[d], demand.device_share) for d in gpu_devices if d in slot_of)
    wanted = demand.gpu_whole or (1 if demand.gpu_share else 0)
    if len(given) == wanted:
        return given
    picked = worker.pick_devices(demand)
    if picked is not None:
        return picked
    freest = sorted(range(len(worker.free_dev)), key=lambda slot: -worker.free_dev[slot])
    return tuple((slot, demand.device_share) for slot in freest[:wanted])
