"""Losing workers only on silence the coordinator was awake to hear.

A worker is lost after ``heartbeat_misses`` of its intervals without a word. That
silence only means something while the coordinator could hear: not while it is
disconnected from NATS, and not while its process was stopped (SIGSTOP, a VM stall),
when the heartbeats queue unread. ``Listening`` measures the time it was deaf (told by
the service on disconnect and reconnect, or seen as a gap between ticks much longer
than the tick interval), and deadlines are kept on a clock that stops meanwhile
(``Listening.heard``), so they all move at once, for the cost of one addition (moving
each was O(workers) per heartbeat while behind, which at 10,000 workers kept it behind);
after a reconnect every worker also gets a fresh grace (``floored``), as agents reconnect
on their own schedule. Nor while its own inbound side is backlogged (``Listening.hear``):
a heartbeat waiting unread in the coordinator's queues behind a flood was sent, just not
read yet; that time goes uncounted too, within a bounded credit (``BACKLOG_CREDIT``).
A large fleet is told to beat less often (``Pacer``), so reading heartbeats costs the
coordinator about the same whatever the number of agents.

``Departed`` keeps recently lost workers for a while, as the pool saw them: work one
of them could hold waits for it to come back (a host restarting, the only GPU host
briefly gone) instead of failing at once as infeasible. Work no worker has been able
to hold still fails at once (or after ``infeasible_grace``).

Plain data and functions: the scheduler calls them with the time; no clock, no I/O.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.scheduling.state import RunState
from coordinator.scheduling.tasks import TaskCatalog
from shared.resources import ResourceRequest, WorkerSpec

PAUSE_TICKS = 3
"""A gap between two ticks longer than this many tick intervals is a pause: the process
was stopped or stalled, and heard nothing meanwhile."""

BACKLOG_CREDIT = 10.0
"""Seconds of backlogged time that may go uncounted as silence at most in a row (and the
most the credit holds): a backlog that never clears must not stop loss judgement for ever."""
BACKLOG_REFILL = 0.1
"""Credit regained per second the inbound side is caught up."""

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
    behind: bool = False
    """Agents' messages were waiting unread when the service last looked (``hear``)."""
    was_behind: bool = False
    """... and when it looked before the last time the clock was read (``observe``)."""
    credit: float = BACKLOG_CREDIT
    """Seconds of backlog that may still go uncounted (``backlog_credit``)."""
    unheard: float = 0.0
    """Seconds so far that did not count as silence: paused, backlogged or disconnected."""

    def heard(self, now: float) -> float:
        """``now`` on the clock of time the coordinator could hear: deadlines of silence are
        kept on it, so time that does not count moves every one of them at once, by
        adding to ``unheard``, instead of a rewrite of each worker's and attempt's."""
        return now - self.unheard

    @property
    def suspended(self) -> bool:
        return self.deaf_since is not None

    def hear(self, behind: bool) -> None:
        """The service's word, before it applies what it read: are agents' messages (a
        heartbeat among them, maybe) still waiting unread in its inbound queues?"""
        self.behind = behind

    def observe(self, now: float) -> float:
        """The time since it was last given the time (a tick, a heartbeat) that the
        coordinator was paused or its inbound side backlogged (0 when neither): what
        deadlines move by. Time disconnected is not counted here (``resume``)."""
        last, self.last_tick = self.last_tick, now
        behind, self.was_behind = self.behind or self.was_behind, self.behind
        if last is None or self.deaf_since is not None:
            return 0.0
        gap = max(0.0, now - last)
        self.credit, backlog = backlog_credit(self.credit, gap, behind)
        if self.tick is None or gap <= PAUSE_TICKS * self.tick:
            pause = backlog
        else:
            pause = max(gap - self.tick, backlog)  # the same stretch of time: not both
        self.unheard += pause
        return pause

    def suspend(self, now: float) -> None:
        if self.deaf_since is None:
            self.deaf_since = now

    def resume(self, now: float) -> float:
        """How long the connection was down (0 when it was not)."""
        since, self.deaf_since = self.deaf_since, None
        self.last_tick = now
        down = 0.0 if since is None else max(0.0, now - since)
        self.unheard += down
        return down


def backlog_credit(credit: float, gap: float, behind: bool) -> tuple[float, float]:
    """(credit left, seconds of ``gap`` not to count as silence) for a stretch of ``gap``
    seconds during which the inbound side was (``behind``) or was not backlogged.

    While backlogged, a heartbeat may be waiting unread behind a flood in the
    coordinator's own queues: that is not silence, so the time goes uncounted (deadlines
    move by it), as long as credit lasts. Caught-up time earns credit back at
    ``BACKLOG_REFILL`` a second, up to ``BACKLOG_CREDIT``. A backlog that never clears
    thus delays a dead worker's loss by ``BACKLOG_CREDIT`` at most; one that comes and
    goes by at most ``BACKLOG_CREDIT`` plus ``BACKLOG_REFILL`` times the silence, so a
    worker silent for ``misses`` intervals of awake time is lost within
    ``(1 + BACKLOG_REFILL) * misses * interval + BACKLOG_CREDIT`` whatever the backlog
    does. Without credit, judgement would stop for as long as a flood lasts."""
    if not behind:
        return min(BACKLOG_CREDIT, credit + BACKLOG_REFILL * gap), 0.0
    spent = min(credit, gap)
    return credit - spent, spent


def floored(silences: Iterable[Silence], floor: Callable[[str], float]) -> list[Silence]:
    """The deadlines, none earlier than ``floor(worker)``."""
    moved = [(max(at, floor(name)), name, seen) for at, name, seen in silences]
    heapq.heapify(moved)
    return moved


MIN_PACE = 0.5
"""The shortest interval the coordinator asks for; a fleet needing less is not paced."""


@dataclass(slots=True)
class Pacer:
    """The interval agents are asked to beat at most (``Pace``), so the fleet's heartbeats
    stay under ``max_rate`` a second, as Nomad bounds its servers' heartbeats: a power of
    two from ``MIN_PACE`` up, so a growing fleet changes it a few times, not at every
    join; raised at once, lowered only once the fleet fits a quarter of it."""

    max_rate: float
    """Heartbeats a second at most; 0: no bound."""
    interval: float = 0.0

    def resize(self, workers: int) -> bool:
        """Whether the interval changed for a fleet of ``workers``."""
        if self.max_rate <= 0:
            return False
        target = pace_level(workers / self.max_rate)
        if target > self.interval or target <= self.interval / 4:
            changed, self.interval = target != self.interval, target
            return changed
        return False

    def deadline(self, heard_at: float, interval: float, misses: int) -> float:
        """When a worker last heard at ``heard_at`` (on the heard clock) is lost: after
        ``misses`` of its own interval, or of the pace if it is longer (an agent told of
        a longer one beats next after it)."""
        return heard_at + misses * max(interval, self.interval)


def pace_level(needed: float) -> float:
    """The least power of two times ``MIN_PACE`` at least ``needed``; 0 below ``MIN_PACE``."""
    if needed < MIN_PACE:
        return 0.0
    return MIN_PACE * 2.0 ** math.ceil(math.log2(needed / MIN_PACE))


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
