"""Walking a plan's shape classes for the best member that fits now.

Pure functions over a plan and the classes' free-capacity indexes; the pool
calls them and applies the winner.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from coordinator.placement.grid import SEQ_BITS, SEQ_MASK
from coordinator.placement.plan import Plan, host_weight
from coordinator.placement.policies import Policy, Walk, leftover
from coordinator.placement.shapes import Binding, ShapeClass
from coordinator.placement.workers import WorkerState
from shared.capacity import Demand, DevicePick


class Limits(NamedTuple):
    classes: int
    per_walk: int
    visits: int
    """Members looked at per class before moving on (a busy answer looks at all)."""


@dataclass(slots=True)
class Best:
    rank: tuple[float, float, float, int]
    """(preference, walk segment or fragmentation growth, fit, worker seq): least wins."""
    worker: WorkerState
    cls: ShapeClass
    devices: DevicePick


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
    scans: dict[int, Scan] = field(default_factory=dict)
    """``walk_class`` per visit budget."""


def class_walk(
    cls: ShapeClass, b: Binding, plan: Plan, policy: Policy, per_walk: int, kept: list[Any], n: int
) -> ClassWalk:
    """Where ``policy`` walks ``cls``, the ``n``-th class of its group, kept in ``kept``
    (what this request's plan keeps for the group; the caller reads a kept walk)."""
    walks = policy.walks(cls, b) if cls.has_room(b) else []
    est = estimate(walks, b, plan.scale.axis(b.axis)) if walks else None
    view = kept[n] = ClassWalk(cls.stamp, per_walk, walks, est)
    return view


Scouted = tuple[tuple[int, float], int, ShapeClass, ClassWalk, int, Binding]


def scan_group(scouted: list[Scouted], plan: Plan, limits: Limits) -> Scan:
    best: Best | None = None
    found = 0
    truncated = False
    for _, _, cls, view, weight, b in scouted:
        scan = view.scans.get(limits.visits)
        if scan is None:
            scan = view.scans[limits.visits] = walk_class(cls, view.walks, b, plan, limits, weight)
        candidate, cut = scan
        truncated = truncated or cut
        if candidate is not None:
            best = better(best, candidate)
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
    demand, per_host, host_prefs = plan.demand, plan.per_host, plan.host_prefs
    members = cls.members
    visits = limits.visits
    for segment, walk in enumerate(then_maybe(walks, cls, b, demand)):
        best: Best | None = None
        found = 0
        entries = walk.entries
        for i in walk.positions:
            visits -= 1
            if visits < 0:
                return best, True
            worker = members[entries[i] & SEQ_MASK]
            if per_host and not all(s.matches(worker.labels) for s in per_host):
                continue
            devices = worker.fit(demand)
            if devices is None:
                continue
            extra = host_weight(plan, worker) if host_prefs else 0
            rank = (
                -weight - extra,
                segment,
                walk.sign * leftover(worker, demand, devices, plan.scale),
                worker.seq,
            )
            if best is None or rank < best.rank:
                best = Best(rank, worker, cls, devices)
            found += 1
            if found >= limits.per_walk:
                break
        if best is not None:
            return best, False
    return None, False


def then_maybe(walks: list[Walk], cls: ShapeClass, b: Binding, demand: Demand) -> Iterator[Walk]:
    yield from walks
    maybe = cls.maybe_fits(demand, b)
    if maybe is not None:
        yield Walk(*maybe, walks[0].sign)


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
