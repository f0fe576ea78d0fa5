"""ResourceAwareWorkerPool: the live view of every worker and every reservation.

Pure by design: no I/O, no clock, no asyncio. The coordinator's NATS service
feeds it events (a worker advertised, left, reported usage) and asks it for
decisions (place this request, release that reservation); unit tests and the
10,000-worker simulator drive it the same way.

A decision is a pipeline, cheapest stage first:
1. plan (cached per distinct request and pool shape): the request in integer
   units, the shape classes that pass every feasibility check, grouped by
   preference (CPU-only work tries non-GPU hosts first, then preferred labels);
2. walk: the policy bisects each class's free-capacity index and yields a few
   members that fit now;
3. rank: the best candidate of the first group that has any wins.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from coordinator.placement.demand import Demand
from coordinator.placement.feasibility import (
    SHAPE_CHECKS,
    WORKER_CHECKS,
    Amounts,
    Rejection,
    rejections,
)
from coordinator.placement.outcome import Candidate, CannotPlace, Placement, PlaceResult
from coordinator.placement.policies import Policy, Scale, Walk, get_policy, leftover
from coordinator.placement.shapes import Axis, ShapeClass, ShapeKey, is_unique_label, shape_key
from coordinator.placement.usage import WorkerUsage, usage_of
from coordinator.placement.workers import DevicePick, WorkerState
from shared.resources import ResourceRequest, WorkerSpec

NEAREST = 3
_PLAN_CACHE_LIMIT = 4096


_Entry = tuple[ShapeClass, Axis, int, int]
"""A feasible class with its binding axis, the amount needed on it and its total."""


@dataclass(slots=True)
class _Plan:
    version: int
    demand: Demand
    groups: list[list[_Entry]]
    per_host: tuple[Any, ...]
    infeasible: CannotPlace | None
    scale: Scale


@dataclass(slots=True)
class _Best:
    rank: tuple[int, float, int]
    worker: WorkerState
    cls: ShapeClass
    devices: DevicePick


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
        self._held: dict[Hashable, Placement] = {}
        self._plans: dict[str, _Plan] = {}
        self._version = 0
        self._seq = itertools.count()
        self._keys = itertools.count()
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
        self._class_for(worker).add(worker)
        return spec.name

    def update_worker(self, spec: WorkerSpec | Mapping[str, Any]) -> list[Placement]:
        """Replace a worker's advertised totals and labels, keeping its reservations.

        Reservations on GPU devices that disappeared cannot be kept: they are
        released and returned so the caller can place that work again.
        Shrunk CPU or RAM may leave the worker over-committed; it then takes
        nothing new until enough is released.
        """
        spec = WorkerSpec.model_validate(spec)
        old = self._workers[spec.name]
        kept = {k: self._held[k] for k in old.held}
        self._detach(old)
        worker = WorkerState.create(spec, old.seq)
        self._workers[spec.name] = worker
        evicted: list[Placement] = []
        for key, placement in kept.items():
            hold = old.held[key]
            if any(slot >= len(worker.free_dev) for slot, _ in hold.devices):
                del self._held[key]
                evicted.append(placement)
            else:
                worker.take(key, Demand.of(placement.request), hold.devices)
        self._class_for(worker).add(worker)
        return evicted

    def remove_worker(self, name: str) -> list[Placement]:
        """Remove a lost or departed worker; returns the reservations it held."""
        worker = self._workers.pop(name)
        self._detach(worker)
        return [self._held.pop(key) for key in list(worker.held)]

    def observe(self, name: str, *, available_ram_mb: int | None) -> None:
        """Record a host's real free memory; nothing is placed beyond it."""
        worker = self._workers[name]
        worker.live_ram = available_ram_mb
        self._classes[shape_key(worker)].reindex(worker, gpu=False)

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
        elif key in self._held:
            raise ValueError(f"reservation {key!r} is already held")
        plan = self._plan(request)
        if plan.infeasible is not None:
            return plan.infeasible
        chosen = get_policy(policy or request.policy) if policy or request.policy else self.policy
        best = self._choose(plan, chosen)
        if best is None:
            return self._busy(plan)
        worker = best.worker
        worker.take(key, plan.demand, best.devices)
        best.cls.reindex(worker, gpu=bool(best.devices))
        placement = Placement(key, worker.name, worker.device_ids(best.devices), request)
        self._held[key] = placement
        return placement

    def release(self, key: Hashable) -> Placement:
        """Give back exactly what reservation ``key`` took; returns it."""
        placement = self._held.pop(key)
        worker = self._workers[placement.worker]
        hold = worker.give_back(key)
        self._classes[shape_key(worker)].reindex(worker, gpu=bool(hold.devices))
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
        return usage_of(self._workers[name])

    def reservations(self, name: str | None = None) -> list[Placement]:
        if name is None:
            return list(self._held.values())
        return [self._held[k] for k in self._workers[name].held]

    def reservation(self, key: Hashable) -> Placement | None:
        return self._held.get(key)

    # -- internals --------------------------------------------------------

    def _class_for(self, worker: WorkerState) -> ShapeClass:
        skey = shape_key(worker)
        cls = self._classes.get(skey)
        if cls is None:
            cls = self._classes[skey] = ShapeClass(skey)
            self._version += 1
        return cls

    def _detach(self, worker: WorkerState) -> None:
        skey = shape_key(worker)
        cls = self._classes[skey]
        cls.remove(worker)
        if not cls.members:
            del self._classes[skey]
            self._version += 1

    def _plan(self, request: ResourceRequest) -> _Plan:
        plan = self._plans.get(request.key)
        if plan is not None and plan.version == self._version:
            return plan
        if len(self._plans) >= _PLAN_CACHE_LIMIT:
            self._plans.clear()
        plan = self._make_plan(Demand.of(request))
        self._plans[request.key] = plan
        return plan

    def _make_plan(self, demand: Demand) -> _Plan:
        ranked: dict[tuple[int, int], list[_Entry]] = {}
        rejected: list[tuple[ShapeClass, list[Rejection]]] = []
        for cls in self._classes.values():
            missing = rejections(Amounts.total(cls.cap, cls.labels), demand, SHAPE_CHECKS)
            if missing:
                rejected.append((cls, missing))
                continue
            tier = 1 if cls.has_gpu and not demand.wants_gpu else 0
            weight = sum(p.weight for p in demand.preferred if p.selector.matches(cls.labels))
            ranked.setdefault((tier, -weight), []).append((cls, *cls.primary(demand)))
        groups = [ranked[k] for k in sorted(ranked)]
        per_host = tuple(s for s in demand.required if is_unique_label(s.key))
        infeasible = None if groups else _infeasible(rejected)
        caps = [cls.cap for cls in self._classes.values()]
        scale = Scale(
            cpu=max((c.cpu for c in caps), default=0),
            ram=max((c.ram for c in caps), default=0),
            gpus=max((len(c.gpu_models) for c in caps), default=0),
        )
        return _Plan(self._version, demand, groups, per_host, infeasible, scale)

    def _choose(self, plan: _Plan, policy: Policy) -> _Best | None:
        """Best candidate of the first preference group that has one.

        Within a group, classes are first ordered by a cheap estimate (how
        well the first member on each class's binding axis would score) and
        only the ``policy.classes`` most promising classes that can take the
        demand are walked in full, so the cost grows with the number of
        shapes only by one bisect each.
        """
        for group in plan.groups:
            scouted = sorted(
                (est, n, cls, walks)
                for n, (cls, axis, need, total) in enumerate(group)
                if cls.most_free(axis) >= need
                for walks in (policy.walks(cls, axis, need, total),)
                if (est := _estimate(walks, need, plan.scale.axis(axis))) is not None
            )
            best: _Best | None = None
            found = 0
            for _, _, cls, walks in scouted:
                candidate = self._walk_class(cls, walks, plan, policy.per_walk)
                if candidate is not None:
                    best = _better(best, candidate)
                    found += 1
                    if found >= policy.classes:
                        break
            if best is not None:
                return best
        return None

    def _walk_class(
        self, cls: ShapeClass, walks: list[Walk], plan: _Plan, limit: int
    ) -> _Best | None:
        demand, per_host = plan.demand, plan.per_host
        for segment, walk in enumerate(walks):
            best: _Best | None = None
            found = 0
            entries = walk.entries
            for i in walk.positions:
                worker = entries[i][2]
                if per_host and not all(s.matches(worker.labels) for s in per_host):
                    continue
                devices = worker.fit(demand)
                if devices is None:
                    continue
                rank = (
                    segment,
                    walk.sign * leftover(worker, demand, devices, plan.scale),
                    worker.seq,
                )
                if best is None or rank < best.rank:
                    best = _Best(rank, worker, cls, devices)
                found += 1
                if found >= limit:
                    break
            if best is not None:
                return best
        return None

    def _busy(self, plan: _Plan) -> CannotPlace:
        """Explain a wait from the members most likely to free up first."""
        demand = plan.demand
        seen: list[Candidate] = []
        for cls, axis, _, _ in itertools.chain.from_iterable(plan.groups):
            for _, _, worker in reversed(cls.axes[axis][-NEAREST:]):
                missing = rejections(_free_amounts(worker), demand, WORKER_CHECKS)
                seen.append(Candidate(worker.name, tuple(missing)))
        if plan.per_host and not any(
            all(s.matches(w.labels) for s in plan.per_host)
            for entry in itertools.chain.from_iterable(plan.groups)
            for w in entry[0].members.values()
        ):
            return CannotPlace("infeasible", {"labels": len(self._workers)}, tuple(seen[:NEAREST]))
        counts = Counter(r.dimension for c in seen for r in c.missing)
        seen.sort(key=lambda c: len(c.missing))
        return CannotPlace("busy", dict(counts), tuple(seen[:NEAREST]))


def _estimate(walks: list[Walk], need: int, scale: int) -> tuple[int, float] | None:
    """Rank of the first member on the binding axis alone, or None if no walk has any."""
    for segment, walk in enumerate(walks):
        if walk.positions:
            free = walk.entries[walk.positions[0]][0]
            return (segment, walk.sign * (free - need) / scale)
    return None


def _better(a: _Best | None, b: _Best | None) -> _Best | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if b.rank < a.rank else a


def _free_amounts(worker: WorkerState) -> Amounts:
    return Amounts(
        worker.cap,
        worker.free_cpu,
        worker.usable_ram(),
        worker.free_dev,
        worker.free_custom,
        worker.labels,
    )


def _infeasible(rejected: list[tuple[ShapeClass, list[Rejection]]]) -> CannotPlace:
    counts: Counter[str] = Counter()
    for cls, missing in rejected:
        for r in missing:
            counts[r.dimension] += len(cls.members)
    rejected.sort(key=lambda item: (len(item[1]), min(item[0].members)))
    nearest = tuple(
        Candidate(cls.members[min(cls.members)].name, tuple(missing))
        for cls, missing in rejected[:NEAREST]
    )
    return CannotPlace("infeasible", dict(counts), nearest)
