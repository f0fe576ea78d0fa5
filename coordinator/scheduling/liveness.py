"""Losing workers only on silence the coordinator was awake to hear.

A worker is lost after ``heartbeat_misses`` of its intervals without a word. That
silence only means something while the coordinator could hear: not while it is
disconnected from NATS, and not while its process was stopped (SIGSTOP, a VM stall),
when the heartbeats queue unread. ``Listening`` measures the time it was deaf (told by
the service on disconnect and reconnect, or seen as a gap between ticks much longer
than the tick interval) and ``shifted`` moves every worker's deadline by that much; after
a reconnect every worker also gets a fresh grace, as agents reconnect on their own
schedule.

``Departed`` keeps recently lost workers for a while, as the pool saw them: work one
of them could hold waits for it to come back (a host restarting, the only GPU host
briefly gone) instead of failing at once as infeasible. Work no worker has been able
to hold still fails at once (or after ``infeasible_grace``).

Plain data and functions: the scheduler calls them with the time; no clock, no I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.scheduling.state import NodeState, RunState
from coordinator.scheduling.tasks import TaskCatalog
from shared.resources import ResourceRequest, WorkerSpec

PAUSE_TICKS = 3
"""A gap between two ticks longer than this many tick intervals is a pause: the process
was stopped or stalled, and heard nothing meanwhile."""

Silence = tuple[float, str, float]
"""(lost-at, worker, last seen then), the scheduler's heap of deadlines."""


@dataclass(slots=True)
class Listening:
    """When the coordinator could hear heartbeats."""

    tick: float | None
    """The expected time between ticks; None: gaps between ticks are not judged."""
    last_tick: float | None = None
    deaf_since: float | None = None
    """Since when the connection has been down (None: connected)."""

    @property
    def suspended(self) -> bool:
        return self.deaf_since is not None

    def observe(self, now: float) -> float:
        """The time since it was last given the time (a tick, a heartbeat) that the
        coordinator was paused (0 when not)."""
        last, self.last_tick = self.last_tick, now
        if self.tick is None or last is None or self.deaf_since is not None:
            return 0.0
        gap = now - last
        return gap - self.tick if gap > PAUSE_TICKS * self.tick else 0.0

    def suspend(self, now: float) -> None:
        if self.deaf_since is None:
            self.deaf_since = now

    def resume(self, now: float) -> float:
        """How long the connection was down (0 when it was not)."""
        since, self.deaf_since = self.deaf_since, None
        self.last_tick = now
        return 0.0 if since is None else max(0.0, now - since)


def shifted(
    silences: Iterable[Silence], by: float, floor: Callable[[str], float] | None = None
) -> list[Silence]:
    """The deadlines moved ``by`` seconds later, none earlier than ``floor(worker)``."""
    moved = [
        (max(at + by, floor(name)) if floor is not None else at + by, name, seen)
        for at, name, seen in silences
    ]
    heapq.heapify(moved)
    return moved


def shift_attempts(states: Iterable[NodeState], by: float) -> None:
    """Judgements on attempts that also rest on silence (an assignment lost in transit, a
    restored attempt no agent reports) wait out the deaf time too."""
    for state in states:
        if state.status == "placed":
            state.placed_at += by
        if state.adopt_by is not None:
            state.adopt_by += by


class Departed:
    """Workers lost within ``grace`` seconds, as the pool saw them (task label included),
    so the scheduler can ask whether one of them could hold some work."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._pool = ResourceAwareWorkerPool()
        self._until: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []

    def __bool__(self) -> bool:
        return bool(self._until)

    def __contains__(self, name: object) -> bool:
        return name in self._until

    def left(self, spec: WorkerSpec, now: float) -> None:
        """``spec`` (labelled as the pool had it) was lost or left at ``now``."""
        if self.grace <= 0:
            return
        self.returned(spec.name)
        self._pool.add_worker(spec)
        until = self._until[spec.name] = now + self.grace
        heapq.heappush(self._expiry, (until, spec.name))

    def returned(self, name: str) -> None:
        if self._until.pop(name, None) is not None:
            self._pool.remove_worker(name)

    def expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            until, name = heapq.heappop(self._expiry)
            if self._until.get(name) == until:  # else it came back (and maybe left again)
                self.returned(name)

    def could_hold(self, request: ResourceRequest) -> bool:
        return bool(self._until) and self._pool.check(request) is None


def awaits_return(run: RunState, departed: Departed, catalog: TaskCatalog) -> bool:
    """Some worker lost moments ago could hold one of the run's infeasible nodes: the run
    waits for it instead of failing."""
    if not departed:
        return False
    nodes = (run.nodes[node_id].node for node_id in run.infeasible)
    return any(departed.could_hold(catalog.request(n.request, n.task)) for n in nodes)
