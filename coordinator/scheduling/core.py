"""The scheduler's state and the steps every event shares: ending nodes and runs,
feasibility, the ready queue and attempt bookkeeping. Pure: no I/O, no clock.

``Scheduler`` (``machine.py``) adds the events; ``Recovery`` (``recovery.py``) what a
restarted coordinator needs. They are one class split over three modules.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import JsonValue

from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.scheduling.queue import ReadyQueue
from coordinator.scheduling.state import IN_FLIGHT, NodeState, RunState, WorkerInfo
from coordinator.scheduling.tasks import TaskCatalog
from shared.wire.protocol import (
    Assignment,
    AttemptRef,
    ErrorInfo,
    PayloadRef,
)
from shared.wire.runs import RunView

ENDED_MEMORY = 100_000
CONDITIONAL_RETRIES = 3


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


@dataclass(slots=True)
class Decisions:
    assign: dict[str, list[Assignment]] = field(default_factory=dict)
    cancel: dict[str, list[tuple[AttemptRef, str]]] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    finished: list[str] = field(default_factory=list)
    lost_workers: list[tuple[str, str]] = field(default_factory=list)
    name_clashes: list[str] = field(default_factory=list)
    """Workers whose adverts came from an older agent process than the current one."""

    def __bool__(self) -> bool:
        return bool(self.assign or self.cancel or self.changed or self.finished)


class SchedulerCore:
    # -- state -------------------------------------------------------------------------

    def __init__(
        self,
        pool: ResourceAwareWorkerPool,
        config: SchedulerConfig = SchedulerConfig(),
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.pool = pool
        self.config = config
        self.runs: dict[str, RunState] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self.out = Decisions()
        self._rand = rand
        self._ready = ReadyQueue()
        self._deadlines: list[tuple[float, str]] = []
        self._silences: list[tuple[float, str, float]] = []
        """(lost-at, worker, last seen then): when each worker is lost if silent."""
        self._ended: dict[str, None] = {}
        """Recently forgotten runs (insertion-ordered), so a late copy is not run again."""
        self._infeasible_runs: set[str] = set()
        self._catalog = TaskCatalog()
        self._delayed: list[tuple[float, int, NodeState]] = []
        self._attempts: dict[AttemptRef, NodeState] = {}
        self._seq = itertools.count()
        self._dirty = False
        self._in_flight = 0
        self._restored = False
        self._start_time = 0.0
        self._touched: set[str] = set()
        self._settled_at: float | None = 0.0

    def start(self, now: float) -> None:
        """A (re)started coordinator knows no workers yet: until the first agents have
        reported (one heartbeat interval after the first, or ``warmup``), a node no known
        worker fits is not called infeasible."""
        self._settled_at = None
        self._start_time = now

    def settled(self, now: float) -> bool:
        if self._settled_at is None:
            return now >= self._start_time + self.config.warmup
        return now >= self._settled_at

    def take(self) -> Decisions:
        out, self.out = self.out, Decisions()
        out.changed |= self._touched
        self._touched.clear()
        return out

    def queued(self) -> list[NodeState]:
        """Ready nodes waiting for capacity (not those waiting out a retry delay)."""
        return self._ready.states()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def view(self, run_id: str) -> RunView:
        """The run as clients see it; an ended run cannot change, so its view is built once
        (the final push and the final checkpoint both need it)."""
        run = self.runs[run_id]
        if run.final_view is not None:
            return run.final_view
        view = RunView(
            run_id=run.run_id,
            name=run.submit.name,
            status=run.status,
            submitted_at=run.submitted_at,
            finished_at=run.finished_at,
            nodes=tuple(n.view() for n in run.nodes.values()),
            outputs=run.values,
            output_refs=run.refs,
            error=run.error,
        )
        if run.status != "running":
            run.final_view = view
        return view

    # -- node endings ------------------------------------------------------------------

    def _succeeded(
        self, state: NodeState, value: JsonValue, ref: PayloadRef | None, now: float
    ) -> None:
        run, outputs = state.run, state.node.outputs
        if len(outputs) == 1:
            if ref is not None:
                run.refs[outputs[0]] = ref
            else:
                run.values[outputs[0]] = value
        elif len(outputs) > 1:
            if ref is not None or not isinstance(value, list) or len(value) != len(outputs):
                got = "a stored value" if ref is not None else _shape(value)
                self._fail(
                    state,
                    ErrorInfo(
                        type="OutputMismatch",
                        message=f"declares {len(outputs)} outputs {list(outputs)}, returned {got}",
                    ),
                    now,
                )
                return
            run.values.update(zip(outputs, value, strict=True))
        state.move("succeeded")
        for nxt in run.submit.dag.downstream[state.id]:
            child = run.nodes[nxt]
            child.waiting -= 1
            if child.waiting == 0 and child.status == "pending" and run.status == "running":
                self._make_ready(child, now)
        self._after_node(run, now)

    def _app_failure(self, state: NodeState, error: ErrorInfo, now: float) -> None:
        """Retry per the node's policy; a task that raises ``RetryException`` asks for a
        retry itself, so it gets one even without a policy (up to CONDITIONAL_RETRIES)."""
        policy = state.node.retry
        asked = error.type.rsplit(".", 1)[-1] == "RetryException"
        limit = policy.max_retries or (CONDITIONAL_RETRIES if asked else 0)
        if state.app_retries < limit and (asked or policy.retries(error.type)):
            state.app_retries += 1
            state.error = error
            state.move("ready")
            delay = policy.delay_for(state.app_retries, self._rand())
            self._enqueue(state, now, not_before=now + delay)
            return
        self._fail(state, error, now)

    def _system_failure(
        self, state: NodeState, why: str, now: float, *, untracked: bool = False
    ) -> None:
        if not untracked:
            self._untrack(state)
        state.system_retries += 1
        if state.system_retries > self.config.system_retries:
            self._fail(state, ErrorInfo(type="WorkerLost", message=why), now)
            return
        state.reason = why
        state.move("ready")
        self._enqueue(state, now)

    def _fail(self, state: NodeState, error: ErrorInfo, now: float) -> None:
        state.error = error
        state.finished_at = state.finished_at or now
        state.move("failed")
        run = state.run
        if run.submit.options.on_error == "stop":
            self._end_run(
                run, "failed", f"node {state.id} failed: {error.type}: {error.message}", now
            )
            return
        self._skip_downstream(run, state.id)
        self._after_node(run, now)

    def _skip_downstream(self, run: RunState, node_id: str) -> None:
        stack = list(run.submit.dag.downstream[node_id])
        while stack:
            child = run.nodes[stack.pop()]
            if child.status in ("pending", "ready"):
                child.reason = f"skipped: upstream {node_id} failed"
                child.move("skipped")
                stack.extend(run.submit.dag.downstream[child.id])

    def _after_node(self, run: RunState, now: float) -> None:
        self._touch(run)
        if run.remaining == 0 and run.status == "running":
            failed = [n.id for n in run.nodes.values() if n.status == "failed"]
            status = "failed" if failed else "succeeded"
            self._end_run(run, status, f"failed nodes: {failed}" if failed else "", now)

    def _end_run(self, run: RunState, status: str, error: str, now: float) -> None:
        assert status in ("succeeded", "failed", "cancelled")
        run.status = status  # type: ignore[assignment]
        run.error = error
        run.finished_at = now
        for state in run.nodes.values():
            if state.status in IN_FLIGHT:
                assert state.worker is not None
                self._send_cancel(state.worker, state.ref, error or status)
                self._untrack(state)
                state.move("cancelled")
            elif state.status in ("pending", "ready"):
                state.move("cancelled" if status == "cancelled" else "skipped")
        self._touch(run)
        self.out.finished.append(run.run_id)

    # -- feasibility -------------------------------------------------------------------

    def _check_feasible(self, run: RunState, now: float) -> None:
        for state in run.nodes.values():
            answer = self._infeasible(state)
            if answer is not None:
                self._mark_infeasible(run, state, answer, now)
        if run.infeasible and self.config.infeasible_grace <= 0 and self.settled(now):
            self._fail_infeasible(run, now)

    def _infeasible(self, state: NodeState) -> str | None:
        task = state.node.task
        if self.workers and not any(
            w.tasks is None or task in w.tasks for w in self.workers.values()
        ):
            return f"no worker has task {task!r}"
        answer = self.pool.check(self._catalog.request(state.node.request, task))
        return None if answer is None else f"{state.node.request.describe()}: {answer}"

    def _mark_infeasible(self, run: RunState, state: NodeState, why: str, now: float) -> None:
        state.reason = f"infeasible: {why}"
        run.infeasible[state.id] = why
        if run.infeasible_since is None:
            run.infeasible_since = now
            self._infeasible_runs.add(run.run_id)
        run.changed.add(state.id)
        self._touch(run)

    def _recheck_infeasible(self, now: float) -> None:
        """After a worker joined or changed: clear what some worker now fits. Only runs
        still waiting out an infeasibility are looked at, not every run in memory."""
        for run_id in self._infeasible_runs:
            run = self.runs.get(run_id)
            if run is None or run.status != "running":
                continue
            for node_id in list(run.infeasible):
                state = run.nodes[node_id]
                if self._infeasible(state) is None:
                    del run.infeasible[node_id]
                    state.reason = ""
                    run.changed.add(node_id)
            if not run.infeasible:
                run.infeasible_since = None

    def _fail_infeasible(self, run: RunState, now: float) -> None:
        reasons = "; ".join(f"{n}: {why}" for n, why in sorted(run.infeasible.items()))
        for node_id in run.infeasible:
            state = run.nodes[node_id]
            if not state.done:
                state.error = ErrorInfo(type="Infeasible", message=run.infeasible[node_id])
                state.move("failed")
        self._end_run(run, "failed", f"infeasible: {reasons}", now)

    # -- bookkeeping -------------------------------------------------------------------

    def _make_ready(self, state: NodeState, now: float) -> None:
        state.move("ready")
        self._enqueue(state, now)

    def _enqueue(self, state: NodeState, now: float, not_before: float = 0.0) -> None:
        state.ready_since = now
        state.not_before = not_before
        state.seq = next(self._seq)
        if not_before > now:
            heapq.heappush(self._delayed, (not_before, state.seq, state))
        else:
            self._push(state)
            self._dirty = True

    def _push(self, state: NodeState) -> None:
        priority = state.node.priority + state.run.submit.options.priority
        self._ready.push(state, priority)

    def _track(self, state: NodeState, worker: str) -> None:
        state.worker = worker
        self._attempts[state.ref] = state
        info = self.workers.get(worker)
        if info is not None:
            info.attempts.add(state.ref)

    def _untrack(self, state: NodeState) -> None:
        ref = state.ref
        self._attempts.pop(ref, None)
        if self.pool.reservation(ref) is not None:
            self.pool.release(ref)
        info = self.workers.get(state.worker or "")
        if info is not None:
            info.attempts.discard(ref)
        if state.status in IN_FLIGHT:
            self._in_flight -= 1
        state.adopt_by = None
        self._dirty = True

    def _started(self, state: NodeState, now: float) -> None:
        state.move("running")
        state.started_at = now

    def _send_cancel(self, worker: str, ref: AttemptRef, reason: str) -> None:
        self.out.cancel.setdefault(worker, []).append((ref, reason))

    def _touch(self, run: RunState) -> None:
        self._touched.add(run.run_id)


def _shape(value: JsonValue) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return f"a {type(value).__name__}"
