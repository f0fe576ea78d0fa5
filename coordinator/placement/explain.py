"""Why a request could not be placed: counts per dimension and the nearest workers.

Built only on the failure path, from the indexes and a handful of members, so
a busy answer stays cheap however large the pool.
"""

from __future__ import annotations

from bisect import insort
from collections import Counter

from coordinator.placement.feasibility import Amounts, Rejection
from coordinator.placement.grid import SEQ_BITS, SEQ_MASK
from coordinator.placement.outcome import Candidate, CannotPlace
from coordinator.placement.plan import Plan
from coordinator.placement.shapes import CPU, GPU_SHARE, GPU_WHOLE, RAM, ShapeClass
from coordinator.placement.workers import WorkerState

NEAREST = 3


Top = tuple[float, int, WorkerState]
"""(room left on the binding axis as a share of the pool's largest, -seq, worker)."""
ClassView = tuple[int, list[Top], tuple[int, int, int, int]]
"""(class stamp, roomiest members, members short of cpu, ram_mb, gpus, resources)."""
BUSY = "busy"
"""What the plan keeps the class views under."""
DIMENSIONS = ("cpu", "ram_mb", "gpus", "resources")


def _class_view(cls: ShapeClass, plan: Plan) -> ClassView:
    """One class's part of a busy answer: its roomiest members and its shortfall counts.

    The plan keeps it until a member changes (``ShapeClass.stamp``): a request that
    waits is answered again and again while most classes stay as they were.
    """
    d = plan.demand
    axis, need, _ = cls.primary(d)
    scale = plan.scale.axis(axis)
    members = cls.members
    tops = [
        (((e >> SEQ_BITS) - need) / scale, -(e & SEQ_MASK), members[e & SEQ_MASK])
        for e in cls.index(axis)[-NEAREST:]
    ]
    tops.sort(reverse=True)  # roomiest first; seq is unique, so workers never compare
    gpus = 0
    if d.gpu_share:
        gpus = cls.short_on(GPU_SHARE, d.gpu_share)
    elif d.gpu_whole:
        gpus = cls.short_on(GPU_WHOLE, d.gpu_whole)
    resources = 0
    if d.custom:
        resources = sum(
            1 for w in cls.members.values() if any(w.free_custom.get(k, 0) < v for k, v in d.custom)
        )
    counts = (cls.short_on(CPU, d.cpu), cls.short_on(RAM, d.ram), gpus, resources)
    return (cls.stamp, tops, counts)


def busy_view(plan: Plan) -> tuple[list[WorkerState], dict[str, int]]:
    """The few members of feasible classes with the most room on their binding axis, and
    per dimension how many workers of those classes lack it now.

    Read off the free-capacity indexes by bisection, so a busy answer costs
    O(classes * log members); custom resources are not indexed and are counted
    member by member only when the request names some.
    """
    nearest: list[Top] = []  # the roomiest so far, least roomy first
    cpu = ram = gpus = resources = 0
    for group, kept in zip(plan.groups, plan.kept_for(BUSY), strict=False):
        for n, (cls, _, _) in enumerate(group):
            view = kept[n]
            if view is None or view[0] != cls.stamp:
                view = kept[n] = _class_view(cls, plan)
            for top in view[1]:
                if len(nearest) == NEAREST and top < nearest[0]:
                    break  # the rest of this class has less room still
                insort(nearest, top)
                if len(nearest) > NEAREST:
                    del nearest[0]
            short = view[2]
            cpu += short[0]
            ram += short[1]
            gpus += short[2]
            resources += short[3]
    counts = zip(DIMENSIONS, (cpu, ram, gpus, resources), strict=True)
    return [worker for _, _, worker in reversed(nearest)], {d: n for d, n in counts if n}


def free_amounts(worker: WorkerState) -> Amounts:
    return Amounts(
        worker.cap,
        worker.free_cpu,
        worker.usable_ram(),
        worker.free_dev,
        worker.free_custom,
        worker.labels,
    )


def infeasible(rejected: list[tuple[ShapeClass, list[Rejection]]]) -> CannotPlace:
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
