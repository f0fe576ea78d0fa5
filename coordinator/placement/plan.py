"""A request's plan: the feasible shape classes in order of preference, cached per pool shape.

Everything here depends only on the request and on which shape classes exist,
not on what is free, so the pool computes it once per distinct request and
reuses it until a class appears or disappears.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coordinator.placement.feasibility import Amounts, Check, Rejection, rejections
from coordinator.placement.policies import Scale
from coordinator.placement.shapes import Binding, ShapeClass, ShapeKey, is_unique_label
from coordinator.placement.workers import WorkerState
from shared.capacity import Demand
from shared.labels import LabelSelector, PreferredLabel

Entry = tuple[ShapeClass, int, Binding]
"""A feasible class, the weight of the preferred labels it matches, where to walk it."""


@dataclass(slots=True)
class Plan:
    version: int
    demand: Demand
    groups: list[list[Entry]]
    per_host: tuple[LabelSelector, ...]
    host_prefs: tuple[PreferredLabel, ...]
    rejected: list[tuple[ShapeClass, list[Rejection]]]
    scale: Scale
    kept: dict[object, Any] = field(default_factory=dict)
    """What deciding this request keeps: per walker (a policy, or the fragment ranker),
    by group and class, what walking each class found, with the class stamp it holds
    for (``kept_for``); the fragment ranker also notes its mix table's version."""

    def kept_for(self, walker: object) -> list[list[Any]]:
        found: list[list[Any]] | None = self.kept.get(walker)
        if found is None:
            found = self.kept[walker] = [[None] * len(group) for group in self.groups]
        return found


def make_plan(
    demand: Demand,
    classes: Mapping[ShapeKey, ShapeClass],
    families: Mapping[ShapeKey, ShapeClass],
    version: int,
    checks: Sequence[Check],
) -> Plan:
    """Everything about a request that only changes when the set of shapes does.

    Every class goes through all of ``checks`` (every shortfall is reported, not
    only the first); the classes that pass are grouped by preference.
    """
    per_host = tuple(s for s in demand.required if is_unique_label(s.key))
    host_prefs = tuple(p for p in demand.preferred if is_unique_label(p.selector.key))
    ranked: dict[tuple[int, int], list[Entry]] = {}
    rejected: list[tuple[ShapeClass, list[Rejection]]] = []
    # Labels cannot tell classes of one family apart for a request without selectors.
    labelled = demand.required or demand.preferred
    for cls in (classes if labelled else families).values():
        missing = rejections(Amounts.total(cls.cap, cls.labels), demand, checks)
        if missing:
            rejected.append((cls, missing))
            continue
        tier = 1 if cls.has_gpu and not demand.wants_gpu else 0
        weight = sum(p.weight for p in demand.preferred if p.selector.matches(cls.labels))
        # Preferences on per-host labels can outweigh any class: one group per tier then.
        group = (tier, 0 if host_prefs else -weight)
        ranked.setdefault(group, []).append((cls, weight, cls.binding(demand)))
    groups = [ranked[k] for k in sorted(ranked)]
    caps = [cls.cap for cls in classes.values()]
    scale = Scale(
        cpu=max((c.cpu for c in caps), default=0),
        ram=max((c.ram for c in caps), default=0),
        gpus=max((len(c.gpu_models) for c in caps), default=0),
    )
    return Plan(version, demand, groups, per_host, host_prefs, rejected, scale)


def host_weight(plan: Plan, worker: WorkerState) -> int:
    return sum(p.weight for p in plan.host_prefs if p.selector.matches(worker.labels))
