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
from collections.abc import Hashable, Iterable, Iterator, Mapping
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
from coordinator.placement.shapes import (
    Axis,
    Binding,
    ShapeClass,
    ShapeKey,
    family_key,
    is_unique_label,
    rekey,
    shape_key,
)
from coordinator.placement.usage import WorkerUsage, usage_of
from coordinator.placement.workers import DevicePick, WorkerState
from shared.labels import LabelSelector, Op, PreferredLabel
from shared.resources import ResourceRequest, WorkerSpec

NEAREST = 3
_PLAN_CACHE_LIMIT = 4096


_Entry = tuple[ShapeClass, int, Binding]
"""A feasible class, the weight of the preferred labels it matches, where to walk it."""


@dataclass(slots=True)
class _Plan:
    version: int
    demand: Demand
    groups: list[list[_Entry]]
    per_host: tuple[LabelSelector, ...]
    host_prefs: tuple[PreferredLabel, ...]
    rejected: list[tuple[ShapeClass, list[Rejection]]]
    scale: Scale


@dataclass(frozen=True, slots=True)
class _Limits:
    classes: int
    per_walk: int
    visits: int
    """Members looked at per class before moving on (a busy answer looks at all)."""


@dataclass(slots=True)
class _Best:
    rank: tuple[int, int, float, int]
    worker: WorkerState
    cls: ShapeClass
    devices: DevicePick


_Scouted = tuple[tuple[int, float], int, ShapeClass, list[Walk], int, Binding]
_Scan = tuple[_Best | None, bool]


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
        self._hosts: dict[tuple[str, str], set[str]] = {}
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
        self._attach(worker)
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
            demand = Demand.of(placement.request)
            devices = _same_devices(old, worker, old.held[key].devices, demand)
            if devices is None:
                del self._held[key]
                evicted.append(placement)
            else:
                worker.take(key, demand, devices)
        worker.live_ram = old.live_ram
        self._attach(worker)
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
        plan = self._plan(request)
        if not plan.groups:
            return _infeasible(plan.rejected)
        best = self._choose(plan, chosen)
        if best is None:
            return self._busy(plan)
        worker = best.worker
        worker.take(key, plan.demand, best.devices)
        self._reindex(worker, gpu=bool(best.devices))
        placement = Placement(key, worker.name, worker.device_ids(best.devices), request)
        self._held[key] = placement
        return placement

    def release(self, key: Hashable) -> Placement:
        """Give back exactly what reservation ``key`` took; returns it."""
        placement = self._held.pop(key)
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
        return usage_of(self._workers[name])

    def reservations(self, name: str | None = None) -> list[Placement]:
        if name is None:
            return list(self._held.values())
        return [self._held[k] for k in self._workers[name].held]

    def reservation(self, key: Hashable) -> Placement | None:
        return self._held.get(key)

    # -- internals --------------------------------------------------------

    def _attach(self, worker: WorkerState) -> None:
        cls = self._join(self._classes, shape_key(worker), worker)
        self._class_of[worker.name] = cls
        self._family_of[worker.name] = self._join(self._families, family_key(worker), worker)
        for label in worker.labels.items():
            if is_unique_label(label[0]):
                self._hosts.setdefault(label, set()).add(worker.name)

    def _detach(self, worker: WorkerState) -> None:
        self._leave(self._classes, self._class_of.pop(worker.name), worker)
        self._leave(self._families, self._family_of.pop(worker.name), worker)
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
            self._version += 1
        cls.add(w)
        return cls

    def _leave(self, index: dict[ShapeKey, ShapeClass], cls: ShapeClass, w: WorkerState) -> None:
        cls.remove(w)
        if not cls.members:
            del index[cls.key]
            self._version += 1

    def _reindex(self, worker: WorkerState, gpu: bool) -> None:
        changes = rekey(worker, gpu)
        if changes:
            self._class_of[worker.name].move(worker, changes)
            self._family_of[worker.name].move(worker, changes)

    def _named_hosts(self, plan: _Plan) -> list[str] | None:
        """Workers named by an equals/in selector on a per-host label, or None if none is."""
        for sel in plan.per_host:
            if sel.op in (Op.EQUALS, Op.IN):
                return sorted({n for v in sel.values for n in self._hosts.get((sel.key, v), ())})
        return None

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
        per_host = tuple(s for s in demand.required if is_unique_label(s.key))
        host_prefs = tuple(p for p in demand.preferred if is_unique_label(p.selector.key))
        ranked: dict[tuple[int, int], list[_Entry]] = {}
        rejected: list[tuple[ShapeClass, list[Rejection]]] = []
        # Labels cannot tell classes of one family apart for a request without selectors.
        labelled = demand.required or demand.preferred
        for cls in (self._classes if labelled else self._families).values():
            missing = rejections(Amounts.total(cls.cap, cls.labels), demand, SHAPE_CHECKS)
            if missing:
                rejected.append((cls, missing))
                continue
            tier = 1 if cls.has_gpu and not demand.wants_gpu else 0
            weight = sum(p.weight for p in demand.preferred if p.selector.matches(cls.labels))
            # Preferences on per-host labels can outweigh any class: one group per tier then.
            group = (tier, 0 if host_prefs else -weight)
            ranked.setdefault(group, []).append((cls, weight, cls.binding(demand)))
        groups = [ranked[k] for k in sorted(ranked)]
        caps = [cls.cap for cls in self._classes.values()]
        scale = Scale(
            cpu=max((c.cpu for c in caps), default=0),
            ram=max((c.ram for c in caps), default=0),
            gpus=max((len(c.gpu_models) for c in caps), default=0),
        )
        return _Plan(self._version, demand, groups, per_host, host_prefs, rejected, scale)

    def _choose(self, plan: _Plan, policy: Policy) -> _Best | None:
        """Best candidate of the first preference group that has one.

        Within a group, classes are first ordered by a cheap estimate (how
        well the first member on each class's binding axis would score) and
        only the ``policy.classes`` most promising classes that can take the
        demand are walked in full, so the cost grows with the number of
        shapes only by one bisect each. Preferences on per-host labels need
        every fitting member weighed, so they take the slow, exhaustive path.
        """
        named = self._named_hosts(plan)
        if named is not None:
            return self._choose_named(plan, named)
        exhaustive = bool(plan.host_prefs)
        limits = _Limits(
            classes=len(self._classes) if exhaustive else policy.classes,
            per_walk=len(self._workers) if exhaustive else policy.per_walk,
            visits=len(self._workers) if exhaustive else policy.visits,
        )
        for group in plan.groups:
            scouted = sorted(
                (est, n, cls, walks, weight, b)
                for n, (cls, weight, b) in enumerate(group)
                if cls.has_room(b)
                for walks in (policy.walks(cls, b),)
                if (est := _estimate(walks, b, plan.scale.axis(b.axis))) is not None
            )
            best, truncated = self._scan_group(scouted, plan, limits)
            if best is None and truncated:
                # Nothing within the visit budget: look at every member before saying busy.
                unbounded = _Limits(limits.classes, limits.per_walk, len(self._workers))
                best, _ = self._scan_group(scouted, plan, unbounded)
            if best is not None:
                return best
        return None

    def _scan_group(self, scouted: list[_Scouted], plan: _Plan, limits: _Limits) -> _Scan:
        best: _Best | None = None
        found = 0
        truncated = False
        for _, _, cls, walks, weight, b in scouted:
            candidate, cut = self._walk_class(cls, walks, b, plan, limits, weight)
            truncated = truncated or cut
            if candidate is not None:
                best = _better(best, candidate)
                found += 1
                if found >= limits.classes:
                    break
        return best, truncated

    def _choose_named(self, plan: _Plan, names: list[str]) -> _Best | None:
        """Requests that name their hosts skip the index: weigh those few hosts directly."""
        entries = {
            id(entry[0]): (g, entry) for g, group in enumerate(plan.groups) for entry in group
        }
        best: _Best | None = None
        for name in names:
            worker = self._workers[name]
            cls = self._class_of[name]
            found = entries.get(id(cls))
            if found is None or not all(s.matches(worker.labels) for s in plan.per_host):
                continue
            devices = worker.fit(plan.demand)
            if devices is None:
                continue
            group, entry = found
            weight = entry[1] + _host_weight(plan, worker)
            score = leftover(worker, plan.demand, devices, plan.scale)
            best = _better(best, _Best((group, -weight, score, worker.seq), worker, cls, devices))
        return best

    def _walk_class(
        self,
        cls: ShapeClass,
        walks: list[Walk],
        b: Binding,
        plan: _Plan,
        limits: _Limits,
        weight: int,
    ) -> _Scan:
        """The best of the first few fitting members; True if the visit budget ran out.

        The policy's walks cover the members that surely fit in CPU and RAM;
        only when they yield nothing are the members that merely may fit tried.
        """
        demand, per_host, host_prefs = plan.demand, plan.per_host, plan.host_prefs
        visits = limits.visits
        for segment, walk in enumerate(_then_maybe(walks, cls, b, demand)):
            best: _Best | None = None
            found = 0
            entries = walk.entries
            for i in walk.positions:
                visits -= 1
                if visits < 0:
                    return best, True
                worker = entries[i][2]
                if per_host and not all(s.matches(worker.labels) for s in per_host):
                    continue
                devices = worker.fit(demand)
                if devices is None:
                    continue
                extra = _host_weight(plan, worker) if host_prefs else 0
                rank = (
                    -weight - extra,
                    segment,
                    walk.sign * leftover(worker, demand, devices, plan.scale),
                    worker.seq,
                )
                if best is None or rank < best.rank:
                    best = _Best(rank, worker, cls, devices)
                found += 1
                if found >= limits.per_walk:
                    break
            if best is not None:
                return best, False
        return None, False

    def _hosts_exist(self, plan: _Plan) -> bool:
        """Whether any worker of a feasible class passes the per-host selectors."""
        named = self._named_hosts(plan)
        if named is not None:
            workers: Iterable[WorkerState] = (self._workers[n] for n in named)
        else:
            workers = itertools.chain.from_iterable(
                entry[0].members.values() for entry in itertools.chain.from_iterable(plan.groups)
            )
        feasible = {id(entry[0]) for entry in itertools.chain.from_iterable(plan.groups)}
        return any(
            id(self._class_of[w.name]) in feasible
            and all(s.matches(w.labels) for s in plan.per_host)
            for w in workers
        )

    def _busy(self, plan: _Plan) -> CannotPlace:
        """Explain a wait by the workers closest to taking the request.

        Those are the hosts a request names, else the roomiest member (on the
        binding axis) of the classes with the most room; only they get the
        detailed, per-dimension text.
        """
        demand = plan.demand
        named = self._named_hosts(plan)
        if named is not None:
            closest = [self._workers[n] for n in named[:NEAREST]]
        else:
            closest = _roomiest(plan)
        seen = [
            Candidate(w.name, tuple(rejections(_free_amounts(w), demand, WORKER_CHECKS)))
            for w in closest
        ]
        if plan.per_host and not self._hosts_exist(plan):
            return CannotPlace("infeasible", {"labels": len(self._workers)}, tuple(seen))
        counts = _short_counts(plan)
        # Shortfalls the indexes cannot see (device models, custom resources) come from the sample.
        sampled = Counter(r.dimension for c in seen for r in c.missing)
        counts.update({dim: n for dim, n in sampled.items() if dim not in counts})
        seen.sort(key=lambda c: len(c.missing))
        return CannotPlace("busy", dict(counts), tuple(seen[:NEAREST]))


def _then_maybe(walks: list[Walk], cls: ShapeClass, b: Binding, demand: Demand) -> Iterator[Walk]:
    yield from walks
    maybe = cls.maybe_fits(demand, b)
    if maybe is not None:
        yield Walk(*maybe, walks[0].sign)


def _estimate(walks: list[Walk], b: Binding, scale: int) -> tuple[int, float] | None:
    """Rank of the first member on the binding axis alone; None if no member can fit.

    A class whose members only may fit ranks after every class with sure fits.
    """
    for segment, walk in enumerate(walks):
        if walk.positions:
            free = walk.entries[walk.positions[0]][0]
            return (segment, walk.sign * (free - b.need) / scale)
    return (len(walks), 0.0) if b.floor is not None else None


def _roomiest(plan: _Plan) -> list[WorkerState]:
    """The few members of feasible classes with the most room on their binding axis."""
    tops = []
    for cls, *_ in itertools.chain.from_iterable(plan.groups):
        axis, need, _ = cls.primary(plan.demand)
        for free, seq, worker in cls.axes[axis][-NEAREST:]:
            tops.append(((free - need) / plan.scale.axis(axis), -seq, worker))
    tops.sort(key=lambda t: t[:2], reverse=True)
    return [worker for _, _, worker in tops[:NEAREST]]


def _short_counts(plan: _Plan) -> dict[str, int]:
    """Per dimension, how many workers of the feasible classes lack it now.

    Read off the free-capacity indexes by bisection, so a busy answer costs
    O(classes * log members); custom resources are not indexed and are counted
    member by member only when the request names some.
    """
    d = plan.demand
    counts: Counter[str] = Counter()
    for cls, *_ in itertools.chain.from_iterable(plan.groups):
        counts["cpu"] += cls.short_on(Axis.CPU, d.cpu)
        counts["ram_mb"] += cls.short_on(Axis.RAM, d.ram)
        if d.gpu_share:
            counts["gpus"] += cls.short_on(Axis.GPU_SHARE, d.gpu_share)
        elif d.gpu_whole:
            counts["gpus"] += cls.short_on(Axis.GPU_WHOLE, d.gpu_whole)
        if d.custom:
            counts["resources"] += sum(
                1
                for w in cls.members.values()
                if any(w.free_custom.get(k, 0) < v for k, v in d.custom)
            )
    return {dim: n for dim, n in counts.items() if n}


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


def _host_weight(plan: _Plan, worker: WorkerState) -> int:
    return sum(p.weight for p in plan.host_prefs if p.selector.matches(worker.labels))


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
    """Built per answer from the cached class verdicts, so counts and names are current."""
    counts: Counter[str] = Counter()
    for cls, missing in rejected:
        for r in missing:
            counts[r.dimension] += len(cls.members)
    closest = sorted(rejected, key=lambda item: (len(item[1]), min(item[0].members)))
    nearest = tuple(
        Candidate(cls.members[min(cls.members)].name, tuple(missing))
        for cls, missing in closest[:NEAREST]
    )
    return CannotPlace("infeasible", dict(counts), nearest)
