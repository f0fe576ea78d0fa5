"""The placement stack: every stage of one decision, in the order it runs.

Nomad assembles its scheduler in one place (``NewGenericStack`` in
scheduler/feasible/stack.go): a source of nodes, then the feasibility checks,
then the rank iterators, each in a fixed order for a stated reason. This is
the same for the pool. ``Stack.select`` runs the stages below and never
changes the pool: it is a pure function of the pool's indexes (which it
reads, never copies) and of the request. The pool applies the winner.

1. **feasibility** (per shape class, cached in the plan): the checks of
   ``FEASIBILITY`` in order: labels, cpu, ram, custom, gpus. Cheapest and
   most selective first; a class is checked once per distinct request,
   never a worker.
   *Task routing* happens here. The scheduler adds the selector
   ``fleet.io/tasks in (tags of the task sets holding the task, any)``
   (coordinator/scheduling/tasks.py). The tag is an ordinary label, shared
   by every worker of one application, so it is part of the shape-class key.
   The label check decides routing per class, once per plan. A worker
   without the task never reaches the walk, and routing adds nothing to a
   decision once the plan is cached.
   No feasible class: the answer is *infeasible*, rebuilt from the cached
   class verdicts, with no walk.
2. **preference** (also in the plan): the feasible classes grouped by
   preference. CPU-only work tries classes without GPUs first, then the sum
   of matching preferred-label weights orders the groups.
3. **hosts**: a request that names its hosts (``hostname=...`` or ``in``)
   skips the indexes and weighs those few workers directly. Per-host
   selectors are not part of a class key, so this is the first stage that
   looks at single workers.
4. **walk**: in each group, the policy bisects each class's free-capacity
   index on the class's binding axis. It yields the first few members that
   fit now. The classes are taken best estimate first, at most
   ``policy.classes`` of them, each for at most ``policy.visits`` members.
5. **rank**: candidates are scored with ``leftover``. The best of the first
   group that has any wins. If the visit budget cut the walk short and
   found nothing, the group is walked again without a budget before giving
   up: the budget buys speed, never a wrong *busy*.
6. **explain**: the *busy* answer is built only on failure. Counts come from
   bisections of the indexes, and the detailed text from the roomiest few
   members, checked with the same ``FEASIBILITY`` against free amounts.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

from coordinator.placement.explain import NEAREST, busy_view, free_amounts, infeasible
from coordinator.placement.feasibility import (
    Check,
    check_cpu,
    check_custom,
    check_gpus,
    check_labels,
    check_ram,
    rejections,
)
from coordinator.placement.fragment_select import FragmentRanker
from coordinator.placement.mix import RequestMix
from coordinator.placement.outcome import Candidate, CannotPlace, new_cannot_place
from coordinator.placement.plan import Plan, host_weight, make_plan
from coordinator.placement.policies import Policy, Scale, leftover
from coordinator.placement.select import (
    Best,
    GroupWalk,
    Limits,
    better,
    class_walk,
    group_walks,
    scan_group,
)
from coordinator.placement.shapes import ShapeClass, ShapeKey
from coordinator.placement.workers import WorkerState
from shared.capacity import Demand
from shared.labels import Op
from shared.resources import ResourceRequest

STAGES = ("feasibility", "preference", "hosts", "walk", "rank", "explain")
"""The stages of a decision, in the order ``Stack.select`` runs them."""

FEASIBILITY: tuple[Check, ...] = (check_labels, check_cpu, check_ram, check_custom, check_gpus)
"""The feasibility checks, in the order they run: cheapest and most selective first.

Labels (task routing included) reject most classes in a labelled fleet and cost
a dict lookup; CPU and RAM are one comparison each; custom resources a few; GPUs
check every device against the request's model and memory.
"""

PLAN_CACHE_LIMIT = 4096

Choice = tuple[Demand, Best]
"""What ``select`` found: the request in integer units and the winning worker."""


class Stack:
    """The stages of a placement decision over the pool's live indexes.

    The mappings are the pool's own, shared, not copied; the pool calls
    ``reshaped`` whenever a shape class appears or disappears, which is all
    that a cached plan depends on.
    """

    def __init__(
        self,
        workers: Mapping[str, WorkerState],
        classes: Mapping[ShapeKey, ShapeClass],
        families: Mapping[ShapeKey, ShapeClass],
        class_of: Mapping[str, ShapeClass],
        hosts: Mapping[tuple[str, str], set[str]],
        mix: RequestMix,
    ) -> None:
        self._workers = workers
        self._classes = classes
        self._families = families
        self._class_of = class_of
        self._hosts = hosts
        self._plans: dict[str, Plan] = {}
        self._scale: Scale | None = None
        self._version = 0
        self._mix = mix
        self._fragment = FragmentRanker()
        self._lacks: dict[tuple[int, int, str], Candidate] = {}
        self._limits_of: dict[Policy, Limits] = {}

    def reshaped(self) -> None:
        """A shape class appeared or disappeared: every cached plan is stale."""
        self._version += 1

    def forget(self) -> None:
        """Drop every answer kept between decisions, as if each were the first.

        Decisions must not depend on what was kept; the property tests compare a
        pool's answers with those of a copy of it that forgot.
        """
        self._plans.clear()
        self._lacks.clear()
        self._fragment = FragmentRanker()
        for cls in (*self._classes.values(), *self._families.values()):
            cls.table = None
        for worker in self._workers.values():
            worker.scores.clear()
            worker.scored_with = worker.before = None

    def select(self, request: ResourceRequest, policy: Policy) -> Choice | CannotPlace:
        """The best worker for ``request`` now, or why there is none."""
        # 1-2. feasibility (task routing included) and preference: per class, cached.
        key = request.key
        plan = self._plans.get(key)
        if plan is None or plan.version != self._version:
            plan = self.plan(request)
        if not plan.groups:
            # Nothing could ever hold it: explain from the class verdicts, walk nothing.
            return infeasible(plan.rejected)
        # 3. hosts: named hosts are few, so weigh them directly instead of walking indexes.
        # 4-5. walk and rank otherwise, group by group; the first group with a candidate wins.
        named = self._named_hosts(plan) if plan.per_host else None
        best = self._walk(plan, policy, key) if named is None else self._choose_named(plan, named)
        if best is None:
            # 6. explain: only a failure pays for the detailed answer.
            return self._busy(plan, named, key)
        return plan.demand, best

    def check(self, request: ResourceRequest) -> CannotPlace | None:
        """Stages 1-3 only: None when some live worker could hold ``request`` once free."""
        plan = self.plan(request)
        if not plan.groups:
            return infeasible(plan.rejected)
        if plan.per_host and not self._hosts_exist(plan):
            return CannotPlace("infeasible", {"labels": len(self._workers)}, ())
        return None

    def plan(self, request: ResourceRequest) -> Plan:
        """Stages 1 and 2 for ``request``, from the cache while the set of classes holds."""
        plan = self._plans.get(request.key)
        if plan is not None and plan.version == self._version:
            return plan
        if len(self._plans) >= PLAN_CACHE_LIMIT:
            self._plans.clear()
        plan = make_plan(
            Demand.of(request), self._classes, self._families, self._version, FEASIBILITY
        )
        if plan.scale == self._scale:
            plan.scale = self._scale  # one object for every plan: scores kept per worker check it
        self._scale = plan.scale
        self._plans[request.key] = plan
        return plan

    # -- 3. hosts ---------------------------------------------------------

    def _named_hosts(self, plan: Plan) -> list[str] | None:
        """Workers named by an equals/in selector on a per-host label, or None if none is."""
        for sel in plan.per_host:
            if sel.op in (Op.EQUALS, Op.IN):
                return sorted({n for v in sel.values for n in self._hosts.get((sel.key, v), ())})
        return None

    def _choose_named(self, plan: Plan, names: list[str]) -> Best | None:
        """Requests that name their hosts skip the index: weigh those few hosts directly."""
        entries = {
            id(entry[0]): (g, entry) for g, group in enumerate(plan.groups) for entry in group
        }
        best: Best | None = None
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
            weight = entry[1] + host_weight(plan, worker)
            score = leftover(worker, plan.demand, devices, plan.scale)
            best = better(best, Best((group, -weight, score, worker.seq), worker, cls, devices))
        return best

    def _hosts_exist(self, plan: Plan) -> bool:
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

    # -- 4-5. walk and rank -----------------------------------------------

    def _walk(self, plan: Plan, policy: Policy, key: str) -> Best | None:
        """Best candidate of the first preference group that has one.

        Within a group, classes are first ordered by a cheap estimate (how
        well the first member on each class's binding axis would score) and
        only the ``policy.classes`` most promising classes that can take the
        demand are walked in full, so the cost grows with the number of
        shapes only by one bisect each. Preferences on per-host labels need
        every fitting member weighed, so they take the slow, exhaustive path.
        """
        exhaustive = bool(plan.host_prefs)
        # A policy written before ``fragment`` existed walks GPU hosts as it always did.
        fragment = getattr(policy, "fragment", False)
        by_fragment = fragment and not exhaustive and not plan.per_host
        kept: list[GroupWalk] | None = None
        limits: Limits | None = None
        for g, group in enumerate(plan.groups):
            if by_fragment and group[0][0].has_gpu:
                best = self._fragment.choose(plan, g, self._mix.table, key)
                if best is not None:
                    return best
                continue
            if limits is None or kept is None:
                limits = self._limits(policy, exhaustive)
                kept = group_walks(plan, policy)
            walked, per_walk = kept[g], limits.per_walk
            views = walked.views
            for n, (cls, _, b) in enumerate(group):
                view = views[n]
                if view is None or view.stamp != cls.stamp or view.per_walk != per_walk:
                    class_walk(cls, b, plan, policy, per_walk, walked, n)
            best, truncated = scan_group(walked.order, group, views, plan, limits)
            if best is None and truncated:
                # Nothing within the visit budget: look at every member before saying busy.
                unbounded = Limits(limits.classes, limits.per_walk, len(self._workers))
                best, _ = scan_group(walked.order, group, views, plan, unbounded)
            if best is not None:
                return best
        return None

    def _limits(self, policy: Policy, exhaustive: bool) -> Limits:
        if exhaustive:
            workers = len(self._workers)
            return Limits(len(self._classes), workers, workers)
        classes, per_walk, visits = policy.classes, policy.per_walk, policy.visits
        kept = self._limits_of.get(policy)  # made once per policy, while it says the same
        if kept is None or kept != (classes, per_walk, visits):
            kept = self._limits_of[policy] = Limits(classes, per_walk, visits)
        return kept

    # -- 6. explain -------------------------------------------------------

    def _busy(self, plan: Plan, named: list[str] | None, key: str) -> CannotPlace:
        """Explain a wait by the workers closest to taking the request.

        Those are the hosts a request names, else the roomiest member (on the
        binding axis) of the classes with the most room; only they get the
        detailed, per-dimension text.
        """
        if named is not None:
            closest = [self._workers[n] for n in named[:NEAREST]]
        else:
            closest, counts = busy_view(plan)
        seen = [self._candidate(w, plan.demand, key) for w in closest]
        if plan.per_host and not self._hosts_exist(plan):
            return CannotPlace("infeasible", {"labels": len(self._workers)}, tuple(seen))
        if named is not None:
            counts = busy_view(plan)[1]
        # Shortfalls the indexes cannot see (device models, custom resources) come from the sample.
        sampled: dict[str, int] = {}
        for candidate in seen:
            for rejection in candidate.missing:
                sampled[rejection.dimension] = sampled.get(rejection.dimension, 0) + 1
        for dim, n in sampled.items():
            if dim not in counts:
                counts[dim] = n
        if len(seen) > 1:
            seen.sort(key=lambda c: len(c.missing))
        return new_cannot_place("busy", dict(counts), tuple(seen[:NEAREST]))

    def _candidate(self, w: WorkerState, demand: Demand, key: str) -> Candidate:
        """What ``w`` lacks for ``demand`` now; kept while it does not change."""
        memo_key = (w.seq, w.stamp, key)
        found = self._lacks.get(memo_key)
        if found is None:
            if len(self._lacks) >= PLAN_CACHE_LIMIT:
                self._lacks.clear()
            missing = tuple(rejections(free_amounts(w), demand, FEASIBILITY))
            found = self._lacks[memo_key] = Candidate(w.name, missing)
        return found
