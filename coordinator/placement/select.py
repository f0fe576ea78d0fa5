"""Walking a plan's shape classes for the best member that fits now.

Pure functions over a plan and the classes' free-capacity indexes; the pool
calls them and applies the winner.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass
from typing import NamedTuple

from coordinator.placement.grid import SEQ_BITS, SEQ_MASK
from coordinator.placement.plan import Entry, Plan, host_weight
from coordinator.placement.policies import Policy, Walk, leftover, new_walk, spare
from coordinator.placement.shapes import Binding, ShapeClass
from coordinator.placement.workers import WorkerState
from shared.capacity import DevicePick


class Limits(NamedTuple):
    classes: int
    per_walk: int
    visits: int
    """Members looked at per class before moving on (a busy answer looks at all)."""


Rank = tuple[float, float, float, int]


@dataclass(slots=True)
class Best:
    rank: Rank
    """(preference, walk segment or fragmentation growth, fit, worker seq): least wins."""
    worker: WorkerState
    cls: ShapeClass
    devices: DevicePick
    after: tuple[int, float] | None = None
    """What the ranker knows of the worker once it takes the request (``WorkerState.before``)."""


Scan = tuple[Best | None, bool]


@dataclass(slots=True)
class ClassWalk:
    """One class's part of a walk for one request and policy, kept in the plan while the
    class is unchanged (``ShapeClass.stamp``): a decision changes one class, so the next
    decision walks that class again and reads the others' answers."""

    stamp: int
    per_walk: int
    walks: list[Walk]
    estimate: tuple[int, float] | None
    """Rank of the first member on the binding axis; None if no member can fit."""
    scans: dict[int, Scan]
    """``walk_class`` per visit budget."""


Scouted = tuple[int, float, int]
"""A class's estimate, flat, and its place in the group: what the group is sorted by."""


@dataclass(slots=True)
class GroupWalk:
    """One preference group's class walks for one request and policy, kept in the plan,
    and the order they are scanned in: a decision walks one or two classes again and
    moves them in ``order`` instead of sorting the group anew."""

    views: list[ClassWalk | None]
    order: list[Scouted]
    """(estimate, place in the group) of each class that may fit, least first."""


def group_walks(plan: Plan, policy: Policy) -> list[GroupWalk]:
    """What ``plan`` keeps of the walks of ``policy``, per group (made on first use)."""
    found: list[GroupWalk] | None = plan.kept.get(policy)
    if found is None:
        found = plan.kept[policy] = [GroupWalk([None] * len(g), []) for g in plan.groups]
    return found


def class_walk(
    cls: ShapeClass, b: Binding, plan: Plan, policy: Policy, per_walk: int, kept: GroupWalk, n: int
) -> None:
    """Where ``policy`` walks ``cls``, the ``n``-th class of its group, kept in ``kept``."""
    entries = cls.index(b.axis)  # cls.has_room(b), spelt out
    room = entries and entries[-1] >> SEQ_BITS >= (b.need if b.floor is None else b.floor)
    walks = policy.walks(cls, b) if room else []
    est = estimate(walks, b, plan.scale.axis(b.axis)) if walks else None
    view = kept.views[n]
    if view is None:
        kept.views[n] = ClassWalk(cls.stamp, per_walk, walks, est, {})
        was = None
    else:  # written over: a class is walked again about once a decision
        was = view.estimate
        view.stamp, view.per_walk, view.walks, view.estimate = cls.stamp, per_walk, walks, est
        view.scans.clear()
    if est != was:
        order = kept.order
        if was is not None:
            del order[bisect_left(order, (*was, n))]
        if est is not None:
            insort(order, (*est, n))


def scan_group(
    order: list[Scouted],
    group: list[Entry],
    views: list[ClassWalk | None],
    plan: Plan,
    limits: Limits,
) -> Scan:
    """The best of the first ``limits.classes`` classes (in ``order``) that yield a
    candidate, from the walks kept in ``views``; True if a visit budget ran out."""
    best: Best | None = None
    found = 0
    truncated = False
    visits = limits.visits
    for _, _, n in order:
        view = views[n]
        assert view is not None
        scan = view.scans.get(visits)
        if scan is None:
            cls, weight, b = group[n]
            scan = view.scans[visits] = walk_class(cls, view.walks, b, plan, limits, weight)
        candidate, cut = scan
        truncated = truncated or cut
        if candidate is not None:
            if best is None or candidate.rank < best.rank:
                best = candidate
            found += 1
            if found >= limits.classes:
                break
    return best, truncated


def walk_class(
    cls: ShapeClass,
    walks: list[Walk],
    b: Binding,
    plan: Plan,
    limits: Limits,
    weight: int,
) -> Scan:
    """The best of the first few fitting members; True if the visit budget ran out.

    The policy's walks cover the members that surely fit in CPU and RAM;
    only when they yield nothing are the members that merely may fit tried.
    """
    visits = limits.visits
    d = plan.demand
    plain = not (d.gpu_whole or d.gpu_share or d.custom or plan.per_host or plan.host_prefs)
    walker = walk_plain if plain else walk_members
    for segment, walk in enumerate(walks):
        best, visits = walker(cls, walk, segment, plan, limits.per_walk, weight, visits)
        if best is not None or visits < 0:
            return best, visits < 0
    maybe = cls.maybe_fits(plan.demand, b)
    if maybe is not None:
        walk = new_walk(*maybe, walks[0].sign)
        best, visits = walker(cls, walk, len(walks), plan, limits.per_walk, weight, visits)
        return best, visits < 0
    return None, False


def walk_members(
    cls: ShapeClass, walk: Walk, segment: int, plan: Plan, per_walk: int, weight: int, visits: int
) -> tuple[Best | None, int]:
    """The best of the first ``per_walk`` members of ``walk`` that fit now, and the visits
    left (negative: the budget ran out before the walk ended)."""
    demand, per_host, host_prefs, scale = plan.demand, plan.per_host, plan.host_prefs, plan.scale
    members, entries, sign = cls.members, walk.entries, walk.sign
    best: tuple[Rank, WorkerState, DevicePick] | None = None
    found = 0
    for i in walk.positions:
        visits -= 1
        if visits < 0:
            break
        worker = members[entries[i] & SEQ_MASK]
        if per_host and not all(s.matches(worker.labels) for s in per_host):
            continue
        devices = worker.fit(demand)
        if devices is None:
            continue
        extra = host_weight(plan, worker) if host_prefs else 0
        fit = sign * leftover(worker, demand, devices, scale)
        rank = (-weight - extra, segment, fit, worker.seq)
        if best is None or rank < best[0]:
            best = (rank, worker, devices)
        found += 1
        if found >= per_walk:
            break
    return (None if best is None else Best(best[0], best[1], cls, best[2])), visits


def walk_plain(
    cls: ShapeClass, walk: Walk, segment: int, plan: Plan, per_walk: int, weight: int, visits: int
) -> tuple[Best | None, int]:
    """``walk_members`` for work that needs no device, no custom resource and no per-host
    label (most work): the fit and ``leftover`` (as ``spare``) spelt out, two calls fewer
    per member."""
    demand, scale = plan.demand, plan.scale
    cpu, ram = demand.cpu, demand.ram
    members, entries, sign = cls.members, walk.entries, walk.sign
    best: tuple[Rank, WorkerState] | None = None
    found = 0
    for i in walk.positions:
        visits -= 1
        if visits < 0:
            break
        worker = members[entries[i] & SEQ_MASK]
        free_cpu, free_ram, live = worker.free_cpu, worker.free_ram, worker.live_ram
        if cpu > free_cpu or ram > (free_ram if live is None else min(free_ram, live)):
            continue
        gpu = sum(worker.free_dev) if worker.free_dev else None
        rank = (
            -weight,
            segment,
            sign * spare(free_cpu - cpu, free_ram - ram, gpu, scale),
            worker.seq,
        )
        if best is None or rank < best[0]:
            best = (rank, worker)
        found += 1
        if found >= per_walk:
            break
    return (None if best is None else Best(best[0], best[1], cls, ())), visits


def estimate(walks: list[Walk], b: Binding, scale: int) -> tuple[int, float] | None:
    """Rank of the first member on the binding axis alone; None if no member can fit.

    A class whose members only may fit ranks after every class with sure fits.
    """
    for segment, walk in enumerate(walks):
        if walk.positions:
            free = walk.entries[walk.positions[0]] >> SEQ_BITS
            return (segment, walk.sign * (free - b.need) / scale)
    return (len(walks), 0.0) if b.floor is not None else None


def better(a: Best | None, b: Best | None) -> Best | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if b.rank < a.rank else a
