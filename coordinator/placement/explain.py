"""Why a request could not be placed: counts per dimension and the nearest workers.

Built only on the failure path, from the indexes and a handful of members, so
a busy answer stays cheap however large the pool.
"""

from __future__ import annotations

import itertools
from collections import Counter

from coordinator.placement.feasibility import Amounts, Rejection
from coordinator.placement.outcome import Candidate, CannotPlace
from coordinator.placement.plan import Plan
from coordinator.placement.shapes import Axis, ShapeClass
from coordinator.placement.workers import WorkerState

NEAREST = 3


def roomiest(plan: Plan) -> list[WorkerState]:
    """The few members of feasible classes with the most room on their binding axis."""
    tops = []
    for cls, *_ in itertools.chain.from_iterable(plan.groups):
        axis, need, _ = cls.primary(plan.demand)
        for free, seq, worker in cls.axes[axis][-NEAREST:]:
            tops.append(((free - need) / plan.scale.axis(axis), -seq, worker))
    tops.sort(key=lambda t: t[:2], reverse=True)
    return [worker for _, _, worker in tops[:NEAREST]]


def short_counts(plan: Plan) -> dict[str, int]:
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
