"""The scheduler's plain records besides runs and nodes: its configuration, the decisions
it hands out, and what it knows of each worker. Mutable dataclasses, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from shared.resources import WorkerSpec
from shared.wire.protocol import Assignment, AttemptRef


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    heartbeat_misses: int = 3
    """A worker silent for this many of its heartbeat intervals is lost."""
    infeasible_grace: float = 0.0
    max_parallel: int | None = None
    system_retries: int = 3
    max_rejects: int = 5
    aging: float = 30.0
    """A busy node waiting longer than this stops smaller work from backfilling past it."""
    warmup: float = 5.0
    """After ``start``: longest wait for agents to report before "infeasible" is final."""
    lost_worker_grace: float = 30.0
    """Work a worker lost less than this long ago could hold waits for it to come back
    instead of failing as infeasible (work no worker could hold has ``infeasible_grace``)."""
    reconnect_grace: float = 2.0
    """After the connection to NATS is back: the least time (besides ``heartbeat_misses``
    intervals) before any worker can be judged lost, as agents reconnect on their own."""
    pipeline: int = 1
    """Attempts a worker lease may hold at once (``leases.py``); 1: no pipelining."""
    max_heartbeats: float = 0.0
    """Heartbeats a second the fleet's agents are paced to at most (``liveness.Pacer``);
    0: agents beat at their own intervals."""
    tick: float | None = None
    """The service's tick interval: a gap between ticks much longer than it is a pause
    (process stopped, VM stalled), during which no worker's silence counts. None: not
    judged (tests that jump the clock)."""

    def ticking(self, tick: float) -> SchedulerConfig:
        """This configuration for a scheduler ticked every ``tick`` seconds (unless set)."""
        return self if self.tick is not None else replace(self, tick=tick)


@dataclass(slots=True)
class Decisions:
    assign: dict[str, list[Assignment]] = field(default_factory=dict)
    cancel: dict[str, list[tuple[AttemptRef, str]]] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    finished: list[str] = field(default_factory=list)
    lost_workers: list[tuple[str, str]] = field(default_factory=list)
    name_clashes: list[str] = field(default_factory=list)
    """Workers whose adverts came from an older agent process than the current one."""
    reregister: list[str] = field(default_factory=list)
    """Workers to ask for their Register: their task set is not known, or not the one their
    heartbeat proves (``tasks.needs_register``)."""
    pace: list[str] = field(default_factory=list)
    """Workers to tell the pace (``Scheduler.pace``): every one when it changed, else those
    that joined while the fleet is paced."""

    def __bool__(self) -> bool:
        return bool(self.assign or self.cancel or self.changed or self.finished)


@dataclass(eq=False, slots=True)
class WorkerInfo:
    name: str
    spec: WorkerSpec
    started_at: float
    interval: float
    last_seen: float
    heard_at: float = 0.0
    """``last_seen`` on the clock of heard time (``Listening.heard``)."""
    tasks: frozenset[str] | None = None
    """What it may be sent (None: not told yet, so nothing); less than it registered after
    an ``unknown_task`` reject."""
    registered: str | None = None
    """The ``task_digest`` of the set it registered, which its heartbeats must prove."""
    draining: bool = False
    attempts: set[AttemptRef] = field(default_factory=set)
    cpu_percent: float = 0.0
    available_ram_mb: int = 0
