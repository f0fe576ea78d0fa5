"""Why a request could not be placed: counts per dimension and the nearest workers.

Built only on the failure path, from the indexes and a handful of members, so
a busy answer stays cheap however large the pool.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Hashable
from operator import itemgetter

from coordinator.placement.feasibility import Amounts, Rejection
from coordinator.placement.outcome import Candidate, CannotPlace
from coordinator.placement.plan import Plan
from coordinator.placement.shapes import CPU, GPU_SHARE, GPU_WHOLE, RAM, ShapeClass
from coordinator.placement.workers import WorkerState

NEAREST = 3


Top = tuple[float, int, WorkerState]
"""(room left on the binding axis as a share of the pool's largest, -seq, worker)."""


def _class_view(cls: ShapeClass, plan: Plan, key: Hashable) -> tuple[list[Top], dict[str, int]]:
    """One class's part of a busy answer: its roomiest members and its shortfall counts.

    Kept per request until a member changes (``ShapeClass.stamp``): a request that
    waits is answered again and again while most classes stay as they were.
    """
    memo_key = ("busy", key)
    kept = cls.memo.get(memo_key)
    if kept is not None and kept[0] == cls.stamp and kept[1] == plan.version:
        return kept[2], kept[3]
    d = plan.demand
    axis, need, _ = cls.primary(d)
    scale = plan.scale.axis(axis)
    tops = [((free - need) / scale, -seq, w) for free, seq, w in cls.index(axis)[-NEAREST:]]
    counts = {"cpu": cls.short_on(CPU, d.cpu), "ram_mb": cls.short_on(RAM, d.ram)}
    if d.gpu_share:
        counts["gpus"] = cls.short_on(GPU_SHARE, d.gpu_share)
    elif d.gpu_whole:
        counts["gpus"] = cls.short_on(GPU_WHOLE, d.gpu_whole)
    if d.custom:
        counts["resources"] = sum(
            1 for w in cls.members.values() if any(w.free_custom.get(k, 0) < v for k, v in d.custom)
        )
    cls.memo[memo_key] = (cls.stamp, plan.version, tops, counts)
    return tops, counts


def busy_view(plan: Plan, key: Hashable) -> tuple[list[WorkerState], dict[str, int]]:
    """The few members of feasible classes with the most room on their binding axis, and
    per dimension how many workers of those classes lack it now.

    Read off the free-capacity indexes by bisection, so a busy answer costs
    O(classes * log members); custom resources are not indexed and are counted
    member by member only when the request names some.
    """
    tops: list[Top] = []
    counts: dict[str, int] = {}
    for cls, *_ in itertools.chain.from_iterable(plan.groups):
        class_tops, class_counts = _class_view(cls, plan, key)
        tops += class_tops
        for dim, n in class_counts.items():
            counts[dim] = counts.get(dim, 0) + n
    nearest = heapq.nlargest(NEAREST, tops, key=itemgetter(0, 1))
    return [worker for _, _, worker in nearest], {d: n for d, n in counts.items() if n}


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
