"""Choosing among GPU hosts by fragmentation (the rank stage for a fragment-aware policy).

Per shape class of a preference group: the first ``CANDIDATES`` members that
fit, tightest first (``GpuGrid.levels``: fewest free devices or smallest free
share, then fewest cores), each scored by how much it makes the class's free
GPU unusable for the learned mix (``fragment.score``), ties going to the
tighter fit (``leftover``) and then the older worker. On the openb replay,
scoring the three tightest members of each class was as good as scoring every
member, at a fraction of the cost (two: 0.05 point less, four: no better).

A class's answer for one request depends only on its members, the mix table
and the plan, so the plan keeps it (``Plan.kept``) and it is reused
until it could differ: the class notes which member each change touched
(``ShapeClass.log``), and an answer still holds after changes to members that
were not among its candidates and that, if they fit now, come after the last
candidate in the walk. Whether any member fits is part of the answer, so
"nothing fits now" is exact, and just as cheap the second time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Hashable
from dataclasses import dataclass
from math import inf

from coordinator.placement.fragment import STATE_LIMIT, ClassTable, class_table
from coordinator.placement.fragment_score import NO_FIT, Scored, State, score
from coordinator.placement.grid import SEQ_BITS, SEQ_MASK, SHARE_STEP
from coordinator.placement.mix import MixTable
from coordinator.placement.plan import Plan
from coordinator.placement.policies import Scale
from coordinator.placement.select import Best, Rank
from coordinator.placement.shapes import GPU_SHARE, GPU_WHOLE, ShapeClass
from coordinator.placement.workers import WorkerState
from shared.capacity import Capacity, Demand, DevicePick

CANDIDATES = 3
LEVEL_BITS = 96
FRAGMENT = "fragment"
"""What the plan keeps the answers of ``FragmentRanker.choose`` under ..."""
SCORED_WITH = "fragment table"
"""... and the version of the mix table they were scored with."""
REPLAY_LIMIT = 16
"""Changes to a class checked one by one before its answer is simply computed again."""

Position = int
"""Where a member comes in a walk: (level, free cores, seq) as one int, ordered alike."""


@dataclass(slots=True)
class Answer:
    """One class's best member for one request, and what it was chosen from."""

    cls: ShapeClass
    stamp: int
    rank: Rank | None
    """The best member's rank; None if no member fits now."""
    worker: WorkerState | None
    devices: DevicePick
    after: State | None
    """The state placing on ``worker`` leaves it in."""
    candidates: tuple[WorkerState, ...]
    last: Position | None
    """Walk position of the last candidate when the walk stopped there; None if it ran out."""


def position(w: WorkerState, d: Demand) -> Position:
    """Where ``w`` comes in the walk of ``GpuGrid.levels`` for ``d``: its level times
    2**96 plus its entry in the level (``filed``, which stays in order for any free cores
    below 2**63, less than none), one int to compare rather than a tuple."""
    level = w.index_keys[GPU_WHOLE] if d.gpu_whole else w.index_keys[GPU_SHARE] // SHARE_STEP
    return (level << LEVEL_BITS) + (w.free_cpu << SEQ_BITS) + w.seq


def still_holds(answer: Answer, d: Demand) -> bool:
    cls = answer.cls
    since = cls.stamp - answer.stamp
    log = cls.log
    if since > REPLAY_LIMIT or since > len(log):
        return False
    candidates, last, members = answer.candidates, answer.last, cls.members
    for w in log[len(log) - since :]:
        if w in candidates:
            return False
        if members.get(w.seq) is not w:
            continue
        if last is not None and position(w, d) >= last:
            continue
        if w.fit(d) is not None:
            return False
    answer.stamp = cls.stamp
    return True


class FragmentRanker:
    """Class tables for the current mix table, and the per-class answers."""

    def __init__(self) -> None:
        self._tables: dict[Capacity, ClassTable] = {}
        self._mix = MixTable(-1, ())
        self._scale: Scale | None = None
        self._version = 0
        """Of the tables: bumped with each new mix table or pool scale."""

    def choose(self, plan: Plan, g: int, table: MixTable, key: Hashable) -> Best | None:
        """The best member of any class of the plan's ``g``-th group that fits now, or None
        (``key`` names the request, for the scores each worker keeps)."""
        scale = plan.scale
        if table.version != self._mix.version or not (scale is self._scale or scale == self._scale):
            self._tables.clear()
            self._mix, self._scale = table, scale
            self._version += 1
        if plan.kept.get(SCORED_WITH) != table.version:
            plan.kept[SCORED_WITH] = table.version
            plan.kept.pop(FRAGMENT, None)  # every answer was scored with another table
        demand, group = plan.demand, plan.groups[g]
        kept = (plan.kept.get(FRAGMENT) or plan.kept_for(FRAGMENT))[g]
        best: Answer | None = None
        least: Rank | None = None
        grown = inf
        for n, answer in enumerate(kept):
            if answer is None or (
                answer.stamp != answer.cls.stamp and not still_holds(answer, demand)
            ):
                cls, weight, _ = group[n]
                answer = kept[n] = self._score_class(cls, weight, plan, key, answer)
            rank = answer.rank
            # a group's classes share the rank's first part, the preferred-label weight, so
            # the growth of frag decides but for ties: a float compare, not a tuple one
            if rank is not None and (
                least is None or rank[1] < grown or (rank[1] == grown and rank < least)
            ):
                best, least, grown = answer, rank, rank[1]
        if best is None or least is None or best.worker is None:
            return None
        return Best(least, best.worker, best.cls, best.devices, best.after)

    def _class_table(self, cls: ShapeClass) -> ClassTable:
        """Classes of the same totals share one table; each keeps a pointer to it."""
        ct = cls.table
        if isinstance(ct, ClassTable) and ct.version == self._version:
            if len(ct.devices) < STATE_LIMIT:
                return ct
            if self._tables.get(cls.cap) is ct:
                del self._tables[cls.cap]
        ct = self._tables.get(cls.cap)
        if ct is None:
            ct = self._tables[cls.cap] = class_table(cls.cap, self._mix, self._version)
        cls.table = ct
        return ct

    def _score_class(
        self, cls: ShapeClass, weight: int, plan: Plan, key: Hashable, answer: Answer | None
    ) -> Answer:
        """The class's answer for the plan's request, in ``answer`` if there was one."""
        grid = cls.grid
        assert grid is not None
        demand, scale = plan.demand, plan.scale
        ct = self._class_table(cls)
        best: Scored | None = None
        chosen: WorkerState | None = None
        candidates: list[WorkerState] = []
        cpu, ram, members = demand.cpu, demand.ram, cls.members
        first = cpu << SEQ_BITS  # the entries from here up have the cores
        for entries in grid.levels(demand):
            if not entries or entries[-1] < first:
                continue
            i, end = bisect_left(entries, first), len(entries)
            while i < end:  # a range() a level costs more than the few steps taken
                worker = members[entries[i] & SEQ_MASK]
                i += 1
                live = worker.live_ram  # usable_ram(), spelt out
                if (worker.free_ram if live is None else min(worker.free_ram, live)) < ram:
                    continue
                scores = worker.scores
                if worker.scored_with is not ct:  # scored with another mix or scale
                    scores.clear()
                    worker.scored_with, worker.before = ct, None
                found = scores.get(key)
                if found is None:
                    found = scores[key] = score(worker, demand, ct, scale, -weight)
                if found is NO_FIT:
                    continue
                rank = found[0]  # one class: the same first part, so growth first (choose)
                if (
                    best is None
                    or rank[1] < best[0][1]
                    or (rank[1] == best[0][1] and rank < best[0])
                ):
                    best, chosen = found, worker
                candidates.append(worker)
                if len(candidates) >= CANDIDATES:
                    last = position(worker, demand)
                    return _answer(answer, cls, best, chosen, candidates, last)
        return _answer(answer, cls, best, chosen, candidates, None)


def _answer(
    answer: Answer | None,
    cls: ShapeClass,
    best: Scored | None,
    chosen: WorkerState | None,
    candidates: list[WorkerState],
    last: Position | None,
) -> Answer:
    """The answer found, written over the one it replaces (a class is rescored about
    twice a decision: no new object each time)."""
    rank, devices, after = (None, (), None) if best is None else best
    if answer is None:
        return Answer(cls, cls.stamp, rank, chosen, devices, after, tuple(candidates), last)
    answer.stamp, answer.rank, answer.worker, answer.devices = cls.stamp, rank, chosen, devices
    answer.after, answer.candidates, answer.last = after, tuple(candidates), last
    return answer
