"""The run/node state machine: events in, decisions out, no I/O and no clock.

Every public method is an event with the time it happened (``now``). Decisions
accumulate in ``self.out`` until the service takes them (``take()``): which
assignments and cancels to send to which worker, which runs changed (to push
to clients and to persist) and which ended.

Every status change of a node or a run goes through ``_move`` / ``_end_run``, which
look it up in ``transitions.py`` and run the bookkeeping the table names for it, so
counts (nodes in flight, nodes left) and reservations follow the statuses by
construction; ``validate_state`` checks that they do.

Waiting work is retried only when something could have changed its answer:
capacity was released, a worker joined or changed, a node became ready, a
retry delay passed. A scheduling pass asks the pool at most once per distinct
request that is busy, so a deep queue of identical nodes costs one failed
``place`` per pass, not one per node.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable

from pydantic import JsonValue

from coordinator.placement.outcome import CannotPlace
from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.scheduling import feasibility, liveness, recovery
from coordinator.scheduling.batches import Batches
from coordinator.scheduling.early import EarlyOutcomes
from coordinator.scheduling.invariants import validate
from coordinator.scheduling.leases import Lease, Leases
from coordinator.scheduling.queue import Group, Key, ReadyQueue
from coordinator.scheduling.state import (
    IN_FLIGHT,
    Decisions,
    NodeState,
    RunState,
    SchedulerConfig,
    WorkerInfo,
    assignment,
    store_outputs,
)
from coordinator.scheduling.stopping import StoppingAttempts
from coordinator.scheduling.tasks import TaskCatalog, Untold, needs_register
from coordinator.scheduling.transitions import (
    NODE_TRANSITIONS,
    RUN_TRANSITIONS,
    Effect,
    InvalidTransition,
    RunEffect,
    Step,
)
from shared.resources import WorkerSpec
from shared.wire.protocol import (
    AttemptRef,
    ErrorInfo,
    Heartbeat,
    Outcome,
    PayloadRef,
    Register,
    Reject,
    task_digest,
)
from shared.wire.runs import NodeStatus, RunStatus, RunView, Submit

__all__ = ["Decisions", "InvalidTransition", "Scheduler", "SchedulerConfig"]

ENDED_MEMORY = 100_000
CONDITIONAL_RETRIES = 3
DEFAULT_CONFIG = SchedulerConfig()


class Scheduler:
    def __init__(
        self,
        pool: ResourceAwareWorkerPool,
        config: SchedulerConfig = DEFAULT_CONFIG,
        *,
        rand: Callable[[], float] = random.random,
        incarnation: str = "",
    ) -> None:
        self.pool = pool
        self.incarnation = incarnation
        """This coordinator lifetime's token, in every attempt it makes (``AttemptRef``)."""
        self.config = config
        self.runs: dict[str, RunState] = {}
        self.workers: dict[str, WorkerInfo] = {}
        self.out = Decisions()
        self._rand = rand
        self._ready = ReadyQueue()
        self._deadlines: list[tuple[float, str]] = []
        self._silences: list[tuple[float, str, float]] = []
        """(lost-at, worker, last seen then): when each worker is lost if silent."""
        self._ended: OrderedDict[str, None] = OrderedDict()
        """Recently forgotten runs, oldest first, so a late copy is not run again. (Not a
        dict: finding a dict's first key after many deletions of the first scans them, 100 us
        a forgotten run once 100,000 had ended.)"""
        self._infeasible_runs: set[str] = set()
        self._early = EarlyOutcomes()
        self._stopping = StoppingAttempts()
        """Cancelled attempts whose agent has not reported them ended: still reserved."""
        self._catalog = TaskCatalog()
        self._batches = Batches(f"batch-{incarnation}" if incarnation else "batch")
        self._leases = Leases(config.pipeline)
        self._untold = Untold()
        self._listening = liveness.Listening(config.tick)
        self._pacer = liveness.Pacer(config.max_heartbeats)
        self._departed = liveness.Departed(config.lost_worker_grace)
        self._delayed: list[tuple[float, int, NodeState]] = []
        self._attempts: dict[AttemptRef, NodeState] = {}
        """Every attempt in flight, by the transition table's ``fly`` and ``land`` only."""
        self._seq = itertools.count()
        self._dirty = False
        self._restored = False
        self._start_time = 0.0
        self._redelivered_at = 0.0
        self._touched: set[str] = set()
        self._settled_at: float | None = 0.0
        self._expecting: set[str] = set()
        self._effects: dict[Effect, Callable[[NodeState], None]] = {
            "fly": self._fly,
            "land": self._land,
            "end": self._end,
            "stop": self._stop,
        }
        self._run_effects: dict[RunEffect, Callable[[RunState], None]] = {
            "stop_nodes": self._stop_nodes,
            "announce": self._announce,
        }

    # -- reads -------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Attempts in flight (tracked). Cancelled attempts their agents have not reported
        ended hold their reservations too (``stopping.py``) but are not counted here."""
        return len(self._attempts)

    def start(self, now: float, redelivery: float = 0.0, expect: Iterable[str] = ()) -> None:
        """A (re)started coordinator knows no workers yet: until the first agents have
        reported (one heartbeat interval after the first, or ``warmup``), a node no known
        worker fits is not called infeasible. ``redelivery``: how long until JetStream has
        delivered again what a previous coordinator left unacknowledged; nothing is placed
        before, so a run delivered again meets the outcomes its nodes already have.
        ``expect``: the workers known to be there (a standby heard them, and asked them to
        register at once): settled as soon as each has reported what it runs."""
        self._settled_at = None
        self._start_time = now
        self._redelivered_at = now + redelivery
        self._expecting = set(expect)

    def replayed(self, now: float) -> None:
        """What a previous coordinator left unacknowledged has been applied: no need to wait
        the rest of ``redelivery``."""
        self._redelivered_at = min(self._redelivered_at, now)

    def settled(self, now: float) -> bool:
        if now < self._redelivered_at:
            return False
        if self._settled_at is None:
            return now >= self._start_time + self.config.warmup
        return now >= self._settled_at

    def take(self) -> Decisions:
        """Hand the decisions over once, so each is sent once."""
        out, self.out = self.out, Decisions()
        out.changed |= self._touched
        self._touched.clear()
        return out

    def queued(self) -> list[NodeState]:
        """Ready nodes waiting for capacity (not those waiting out a retry delay)."""
        return self._ready.states()

    def view(self, run_id: str) -> RunView:
        return self.runs[run_id].view()

    def holds_early(self, run_ids: set[str]) -> bool:
        """An outcome of one of these runs waits for its submission (``early.py``): the
        message that brought it must not be acknowledged yet."""
        return self._early.holds(run_ids)

    def validate_state(self) -> None:
        """Raise AssertionError when the books disagree: a bug that would otherwise show up
        much later as leaked capacity or a run that never ends (for tests)."""
        validate(
            self.runs,
            self.workers,
            self._attempts,
            self.pool,
            self._ready,
            self._delayed,
            self._stopping,
            self._batches,
            self._leases,
        )

    # -- transitions -------------------------------------------------------------------

    def _move(
        self, state: NodeState, to: NodeStatus, why: str, now: float, *, restoring: bool = False
    ) -> None:
        old = state.status
        entry = NODE_TRANSITIONS.get((old, to))
        if entry is None or (entry.restore_only and not restoring):
            name = f"node {state.run.run_id}/{state.id}"
            raise InvalidTransition(name, old, to, why, tuple(state.history))
        state.history.append(Step(old, to, why, now))
        for effect in entry.effects:
            self._effects[effect](state)
        state.status = to
        state.run.changed.add(state.id)
        self._touch(state.run)

    def _fly(self, state: NodeState) -> None:
        self._attempts[state.ref] = state
        state.run.in_flight += 1

    def _land(self, state: NodeState) -> None:
        self._untrack(state)
        self._stopped(state.ref)

    def _untrack(self, state: NodeState) -> None:
        ref = state.ref
        self._attempts.pop(ref, None)
        info = self.workers.get(state.worker or "")
        if info is not None:
            info.attempts.discard(ref)
        state.run.in_flight -= 1
        state.adopt_by = None
        state.after = None

    def _stop(self, state: NodeState) -> None:
        """``land``, but a reservation its agent may still be using is kept (``stopping.py``)
        until the agent reports the attempt ended (``_stopped``), so its capacity is not
        offered to another node while the cancelled work still runs."""
        self._untrack(state)
        ref = state.ref
        holds = self.pool.reservation(ref) is not None or self._leases.lease_of(ref) is not None
        if not self._stopping.book(state, holds):
            self._stopped(ref)

    def _stopped(self, ref: AttemptRef) -> None:
        """The attempt ended (on its agent, or in the books): its capacity is free now, or,
        under a lease, once the lease's last attempt has ended."""
        key: AttemptRef | None = ref
        if self._leases.lease_of(ref) is not None:
            key = self._leases.leave(ref)
        if key is not None and self.pool.reservation(key) is not None:
            self.pool.release(key)
        self._dirty = True

    @staticmethod
    def _end(state: NodeState) -> None:
        state.run.remaining -= 1

    def _end_run(self, run: RunState, status: RunStatus, error: str, now: float) -> None:
        effects = RUN_TRANSITIONS.get((run.status, status))
        if effects is None:
            raise InvalidTransition(f"run {run.run_id}", run.status, status, error)
        run.status = status
        run.error = error
        run.finished_at = now
        for effect in effects:
            self._run_effects[effect](run)
        self._batch_ended(run, now)

    def _stop_nodes(self, run: RunState) -> None:
        assert run.finished_at is not None
        why = run.error or run.status
        for state in run.nodes.values():
            if state.status in IN_FLIGHT:
                assert state.worker is not None
                self._send_cancel(state.worker, state.ref, why)
                self._move(state, "cancelled", why, run.finished_at)
            elif state.status in ("pending", "ready"):
                to: NodeStatus = "cancelled" if run.status == "cancelled" else "skipped"
                self._move(state, to, why, run.finished_at)

    def _announce(self, run: RunState) -> None:
        self._touch(run)
        self.out.finished.append(run.run_id)

    # -- runs --------------------------------------------------------------------------

    def submit(self, submit: Submit, now: float) -> RunState | None:
        """A client wants a run. JetStream may deliver a submission again (after a restart,
        or a late copy), so a known run is answered with itself and a recently ended one is
        not run twice. Feasibility is judged at once: a run nobody can serve fails now
        instead of waiting forever."""
        if submit.run_id in self.runs:
            return self.runs[submit.run_id]
        if submit.run_id in self._ended:
            return None  # a late second copy of a run that already ended
        run = RunState(submit, submitted_at=now, touched=self._touched)
        self.runs[run.run_id] = run
        run.values.update(submit.inputs)
        run.refs.update(submit.input_refs)
        dag = submit.dag
        for node in dag.nodes:
            run.nodes[node.id] = NodeState(node, run, waiting=len(dag.upstream[node.id]))
        run.remaining = len(run.nodes)
        if run.deadline is not None:
            heapq.heappush(self._deadlines, (run.deadline, run.run_id))
        self._check_feasible(run, now)
        if run.status == "running":
            for state in run.nodes.values():
                if state.waiting == 0:
                    self._make_ready(state, "submitted", now)
        for early in self._early.take(run.run_id):
            self.outcome(early, now)  # it ran before this coordinator knew the run
        self._touch(run)
        return run

    def set_max_parallel(self, limit: int | None) -> None:
        """The global cap on attempts in flight, changed while running (``None``: none):
        the next pass may place what the old cap held back."""
        self.config = dataclasses.replace(self.config, max_parallel=limit)
        self._dirty = True

    def cancel_run(self, run_id: str, reason: str, now: float) -> bool:
        """A user stops a run: its attempts are cancelled on their workers so their capacity
        comes back, and nothing more of it is placed. False if it is not running."""
        run = self.runs.get(run_id)
        if run is None or run.status != "running":
            return False
        self._end_run(run, "cancelled", reason or "cancelled", now)
        return True

    def forget(self, run_id: str) -> None:
        """Drop a finished run from memory (it stays in the durable store), remembering its
        id for a while so a late copy of its submission is not run again."""
        run = self.runs.get(run_id)
        if run is not None and run.status != "running":
            del self.runs[run_id]
            run.nodes.clear()  # a run and its nodes refer to each other: see coordinator/heap.py
            self._ended[run_id] = None
            if len(self._ended) > ENDED_MEMORY:
                self._ended.popitem(last=False)

    def restore(self, submit: Submit, view: RunView, now: float, grace: float) -> RunState:
        """A restarted coordinator rebuilds a run from the store. Its attempts in flight may
        still be running on agents that have not reported yet: they are kept (not run
        twice) until an agent lists one, and one nobody reports within ``grace`` is run
        again. Nodes take their stored statuses through the transition table, so the
        counts are the table's, not rebuilt by hand."""
        run, stored = recovery.rebuild(submit, view, self._touched)
        self.runs[run.run_id] = run
        self._batches.claim(run)
        if run.deadline is not None:
            heapq.heappush(self._deadlines, (run.deadline, run.run_id))
        for state in run.nodes.values():
            status = recovery.restored_status(state, stored[state.id])
            if status in IN_FLIGHT:
                state.adopt_by = self._listening.heard(now) + grace
                self._restored = True
            if status != "pending":
                self._move(state, status, "restored", now, restoring=True)
        run.changed.clear()  # restored as stored: nothing to push yet
        for state in run.nodes.values():
            if recovery.needs_ready(state, stored[state.id]):
                self._make_ready(state, "restored", now)
        self._touch(run)
        if run.remaining == 0:
            self._after_node(run, now)
        return run

    # -- workers -----------------------------------------------------------------------

    def register(self, msg: Register, now: float) -> None:
        """An agent announces itself (at its start, or again for a restarted coordinator):
        its task set decides what it may be sent, and what it says it runs is the truth
        the scheduler's books are reconciled with."""
        self._observe(now)
        tasks = frozenset(msg.tasks)
        info = self._worker(
            msg.spec.name, msg.started_at, msg.heartbeat_interval, now, msg.spec, tasks
        )
        if info is None:
            return
        info.registered = task_digest(tasks)
        if info.tasks != tasks:
            self._set_tasks(info, tasks, now)
        self._reconcile(info, msg.running, now)

    def heartbeat(self, msg: Heartbeat, now: float) -> None:
        """Proof of life and the agent's own list of its attempts: it keeps the worker from
        being lost, lets a draining worker take nothing new, and corrects the books
        (adopt what was lost track of, cancel stale attempts, re-place lost ones)."""
        self._observe(now)
        info = self._worker(msg.worker, msg.started_at, msg.interval, now, msg.capacity)
        if info is None:
            return
        info.cpu_percent, info.available_ram_mb = msg.cpu_percent, msg.available_ram_mb
        if needs_register(info.registered, msg.tasks_digest):
            self._prove_tasks(info, msg.tasks_digest, now)
        if msg.draining and not info.draining:
            info.draining = True
            self.pool.remove_worker(info.name)
            self._leases.close_worker(info.name)
        elif not info.draining:
            self.pool.observe(info.name, available_ram_mb=msg.available_ram_mb)
        self._reconcile(info, msg.running + msg.queued, now, frozenset(msg.queued))

    def worker_left(self, name: str, reason: str, now: float) -> None:
        """A worker deregistered, restarted or went silent: its attempts will never report,
        so each is retried at once as a system failure instead of waiting for a timeout."""
        info = self.workers.pop(name, None)
        if info is None:
            return
        if not info.draining:
            self.pool.remove_worker(name)
        self._leases.close_worker(name)
        self.out.lost_workers.append((name, reason))
        self._untold.told(name)
        self._departed.left(self._catalog.labelled(info.spec, info.tasks), now)
        self._repace(None)
        for ref in list(info.attempts):
            state = self._attempts.get(ref)
            if state is not None:
                self._system_failure(state, f"worker {name} {reason}", now)
        for ref in self._stopping.of_worker(name):  # chained ones stopped just now too
            self._stopped(ref)
        self._dirty = True

    def _worker(
        self,
        name: str,
        started_at: float,
        interval: float,
        now: float,
        spec: WorkerSpec,
        tasks: frozenset[str] | None = None,
    ) -> WorkerInfo | None:
        """The worker, added or updated; None for a message from an older agent process
        under a name a newer one now uses (a late message, or two hosts given one name:
        taking turns would make each look restarted and lose the other's work)."""
        info = self.workers.get(name)
        if info is not None and started_at < info.started_at:
            self.out.name_clashes.append(name)
            return None
        if info is not None and info.started_at != started_at:
            self.worker_left(name, "restarted", now)
            info = None
        if info is None:
            if self._settled_at is None:
                self._settled_at = min(now + 1.5 * interval, self._start_time + self.config.warmup)
            if name in self._expecting:
                self._expecting.discard(name)
                if not self._expecting and self._settled_at is not None:
                    self._settled_at = min(self._settled_at, now)  # all reported
            info = self.workers[name] = WorkerInfo(name, spec, started_at, interval, now)
            self._departed.returned(name)
            info.tasks = tasks
            self._expect(info)
            self.pool.add_worker(self._catalog.labelled(spec, tasks))
            self._workers_changed(now)
            self._repace(name)
            return info
        info.last_seen, info.interval = now, interval
        self._expect(info)
        if spec != info.spec and not info.draining:
            info.spec = spec
            for placement in self.pool.update_worker(self._catalog.labelled(spec, info.tasks)):
                state = self._attempts.get(placement.key)  # type: ignore[call-overload]
                if state is not None:
                    self._system_failure(state, "its GPU device disappeared", now)
            self._workers_changed(now)
        return info

    def _set_tasks(self, info: WorkerInfo, tasks: frozenset[str], now: float) -> None:
        info.tasks = tasks
        self._leases.close_worker(info.name)  # a lease's task may be gone
        self._untold.told(info.name)
        if not info.draining:
            self.pool.update_worker(self._catalog.labelled(info.spec, tasks))
        self._workers_changed(now)

    def _prove_tasks(self, info: WorkerInfo, digest: str | None, now: float) -> None:
        """Its heartbeat proves a task set other than the one it registered (or none was):
        take it if known by its digest, else ask the agent for its Register."""
        tasks = self._catalog.known(digest)
        if tasks is None:
            self.out.reregister.append(info.name)
            if info.tasks is None:
                self._untold.heard(info.name, now + self.config.heartbeat_misses * info.interval)
            return
        info.registered = digest
        self._set_tasks(info, tasks, now)

    def _workers_changed(self, now: float) -> None:
        """Only runs still waiting out an infeasibility are looked at, not every run."""
        runs = (self.runs.get(run_id) for run_id in self._infeasible_runs)
        feasibility.recheck(runs, self.workers, self.pool, self._catalog)
        self._dirty = True

    # -- agent answers -----------------------------------------------------------------

    def accepted(self, ref: AttemptRef, now: float) -> None:
        """The agent received the assignment: it is no longer suspected lost in transit,
        and it is reported as running."""
        state = self._attempts.get(ref)
        if state is not None and state.status == "placed":
            self._started(state, "accepted", now)

    def rejected(self, msg: Reject, now: float) -> None:
        """The agent could not take the attempt (full, or the task is unknown there): it is
        placed again, the worker's task set corrected, and after ``max_rejects`` the node
        fails so one nobody accepts cannot bounce forever. An unknown task does not count
        (each such reject takes the task off that worker until it registers again). One the
        agent could not decode fails at once: every agent would decode it the same way."""
        if self._stopping.ended(msg.ref, msg.worker):
            self._stopped(msg.ref)  # cancelled meanwhile: the agent never ran it
            return
        state = self._attempts.get(msg.ref)
        if state is None or state.status not in IN_FLIGHT:
            return
        if msg.code != "unknown_task":  # not counted: that worker is not sent it again
            state.rejects += 1
        info = self.workers.get(msg.worker)
        if msg.code == "unknown_task" and info is not None and info.tasks is not None:
            self._set_tasks(info, info.tasks - {state.node.task}, now)
        if state.rejects >= self.config.max_rejects or msg.code == "malformed":
            self._fail(state, ErrorInfo(type="Rejected", message=msg.reason), now)
            return
        state.reason = f"rejected by {msg.worker}: {msg.reason}"
        self._requeue(state, state.reason, now)

    def outcome(self, msg: Outcome, now: float) -> None:
        """An attempt ended. Outcomes are delivered at least once and may come from an
        attempt already superseded, so only the tracked attempt's own worker counts; one
        the coordinator lost track of (after a restart) is adopted so its work is kept, and
        one of a run not known yet is kept until its submission arrives (``early.py``)."""
        if self._stopping.ended(msg.ref, msg.worker):
            self._stopped(msg.ref)
            return
        if self._keep_early(msg, now):
            return
        ref = msg.ref
        state = self._attempts.get(ref) or self._rekeyed(ref) or self._orphan(ref, msg.worker, now)
        if state is None or state.status not in IN_FLIGHT:
            return  # superseded attempt, or a duplicate
        if state.worker is not None and state.worker != msg.worker:
            return  # not from the worker the attempt was given to
        self._leases.observe(ref, msg.finished_at - msg.started_at)
        state.finished_attempt = msg.ref.attempt
        state.started_at = msg.started_at
        state.finished_at = msg.finished_at
        if msg.status == "succeeded":
            self._succeeded(state, msg.return_value, msg.return_ref, now)
        elif msg.status == "cancelled" and state.run.status == "running":
            if state.after is not None:  # chained: its upstream's value was not there
                self._requeue(state, f"ended unrun on {msg.worker}", now)
                return
            # Cancelled without our asking: the agent was stopped.
            self._system_failure(state, f"cancelled on {msg.worker}", now)
        elif msg.status == "cancelled":
            self._move(state, "cancelled", "cancel confirmed", now)
            if self._stopping.ended(msg.ref, msg.worker):
                self._stopped(msg.ref)
        else:
            error = msg.error or ErrorInfo(type="TimeoutError", message="timed out")
            self._app_failure(state, error, now)

    def _keep_early(self, msg: Outcome, now: float) -> bool:
        """After a restart, before agents have reported: an outcome of a run this
        coordinator does not know (its submission not delivered again yet) is kept.
        Later, or for a run that ended, nothing is pending that it could belong to."""
        run_id = msg.ref.run_id
        if run_id in self.runs or run_id in self._ended or self.settled(now):
            return False
        return self._early.keep(msg, now)

    # -- recovery: what agents report ---------------------------------------------------

    def _reconcile(
        self,
        info: WorkerInfo,
        running: tuple[AttemptRef, ...],
        now: float,
        queued: frozenset[AttemptRef] = frozenset(),
    ) -> None:
        """What the agent says it runs is the truth: adopt what we lost track of, cancel
        what is stale, place again what it never received."""
        grace, listed = max(2 * info.interval, 1.0), set(running)
        heard = self._listening.heard(now)
        for ref in self._stopping.unlisted(info.name, listed, grace, heard):
            self._stopped(ref)
        for ref in list(info.attempts):
            state = self._attempts.get(ref)  # read again: a failure may end its run
            if recovery.lost_in_transit(state, listed, grace, heard):
                assert state is not None
                self._system_failure(state, f"{info.name} never received the assignment", now)
        for ref in running:
            state = self._attempts.get(ref) or self._rekeyed(ref)
            if state is not None:
                self._claimed(state, info, now, ref in queued)
                continue
            run = self.runs.get(ref.run_id)
            node = run.nodes.get(ref.node_id) if run is not None else None
            if recovery.adoptable(node, ref, info):
                assert node is not None
                self._adopt(node, info, ref, now)
            elif recovery.stale(node, ref):
                self._send_cancel(info.name, ref, "stale attempt")

    def _claimed(
        self, state: NodeState, info: WorkerInfo, now: float, queued: bool = False
    ) -> None:
        """A tracked attempt listed by an agent: it runs; one restored from the store is
        accounted again, on the worker running it (stored there or not)."""
        if state.status == "placed" and not queued:
            self._started(state, f"listed by {info.name}", now)
        if state.adopt_by is None:
            return
        state.adopt_by = None
        self._track(state, info.name)
        if not info.draining and self.pool.reservation(state.ref) is None:
            self.pool.adopt(info.name, state.node.request, state.ref, state.gpu_devices)

    def _adopt(self, state: NodeState, info: WorkerInfo, ref: AttemptRef, now: float) -> None:
        state.attempt, state.incarnation = ref.attempt, ref.incarnation
        placement = self.pool.adopt(info.name, state.node.request, ref, ())
        state.gpu_devices = placement.gpu_devices
        self._move(state, "running", f"adopted from {info.name}", now)
        self._track(state, info.name)
        state.started_at = state.started_at or now

    def _rekeyed(self, ref: AttemptRef) -> NodeState | None:
        """A restored attempt not reported yet: the store does not keep which coordinator
        lifetime made it, so the first report of its number (a listing, an outcome) names
        it, and it is tracked under that identity from then on."""
        run = self.runs.get(ref.run_id)
        state = run.nodes.get(ref.node_id) if run is not None else None
        if state is None or not recovery.unnamed_restored(state, ref):
            return None
        del self._attempts[state.ref]
        state.incarnation = ref.incarnation
        self._attempts[state.ref] = state
        return state

    def _orphan(self, ref: AttemptRef, worker: str, now: float) -> NodeState | None:
        """An attempt this coordinator lost track of (its last write predates the dispatch)
        whose outcome arrives before any heartbeat listed it: it ran, so it counts."""
        run = self.runs.get(ref.run_id)
        state = run.nodes.get(ref.node_id) if run is not None else None
        if state is None or not recovery.orphan_counts(run, state, ref):
            return None
        state.attempt, state.incarnation = ref.attempt, ref.incarnation
        self._move(state, "running", f"outcome from {worker} for an untracked attempt", now)
        self._track(state, worker)
        return state

    # -- time --------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Time passed: the only way silent workers, unclaimed restored attempts, ended
        retry delays, run timeouts and infeasibility graces are noticed, and the pass
        that places what became placeable."""
        self._observe(now)
        if not self._listening.suspended:
            self._check_workers(now)
        self._departed.expire(now)
        self._untold.expire(now)
        self._early.expire(now)
        while self._delayed and self._delayed[0][0] <= now:
            _, _, state = heapq.heappop(self._delayed)
            if state.status == "ready":
                self._push(state)
                self._dirty = True
        self._check_runs(now)
        self._form_batches(now)
        self.schedule(now)

    def inbound(self, behind: bool) -> None:
        """Agents' messages wait unread in the service's queues, or not (``Listening.hear``)."""
        self._listening.hear(behind)

    def suspended(self, now: float) -> None:
        """The connection to NATS is down: silence means nothing until it is back."""
        self._listening.suspend(now)

    def resumed(self, now: float) -> None:
        """The connection is back: the time it was down does not count as silence, and
        every worker gets at least a fresh grace to be heard from again."""
        down = self._listening.resume(now)
        if down <= 0:
            return
        cfg, workers = self.config, self.workers

        heard = self._listening.heard(now)

        def floor(name: str) -> float:
            info = workers.get(name)
            wait = 0.0 if info is None else cfg.heartbeat_misses * info.interval
            return heard + max(wait, cfg.reconnect_grace)

        self._silences = liveness.floored(self._silences, floor)

    def _observe(self, now: float) -> None:
        """After a pause (the process was stopped), what was silent meanwhile was not heard,
        not silent: noticed before the first tick or message after it is applied."""
        self._listening.observe(now)

    def _expect(self, info: WorkerInfo) -> None:
        """Note when this worker is lost unless heard from again (a heap, so the check on
        every event costs O(log workers), not a scan)."""
        info.heard_at = self._listening.heard(info.last_seen)
        deadline = info.heard_at + self.config.heartbeat_misses * info.interval
        heapq.heappush(self._silences, (deadline, info.name, info.last_seen))

    @property
    def pace(self) -> float:
        """The interval agents are asked to beat at most; 0: not paced (``Pacer``)."""
        return self._pacer.interval

    def _repace(self, joined: str | None) -> None:
        """The fleet changed size: every worker hears a changed pace, one that joined a
        paced fleet hears it anyway."""
        if self._pacer.resize(len(self.workers)):
            self.out.pace = list(self.workers)
        elif joined is not None and self._pacer.interval > 0:
            self.out.pace.append(joined)

    def _check_workers(self, now: float) -> None:
        misses, heard = self.config.heartbeat_misses, self._listening.heard(now)
        while self._silences and self._silences[0][0] < heard:
            at, name, seen = heapq.heappop(self._silences)
            info = self.workers.get(name)
            if info is None or info.last_seen != seen:
                continue  # heard from since
            paced = self._pacer.deadline(info.heard_at, info.interval, misses)
            if paced > at and paced >= heard:  # told to beat less often than it last said
                heapq.heappush(self._silences, (paced, name, seen))
            else:
                self.worker_left(name, f"missed {misses} heartbeats", now)
        if self._restored:
            unclaimed = [s for s in self._attempts.values() if s.adopt_by is not None]
            for state in unclaimed:
                # Read again: failing one attempt can end its run, which clears the others.
                if state.adopt_by is not None and heard >= state.adopt_by:
                    why = "no agent reports it after the coordinator restarted"
                    self._system_failure(state, why, now)
            self._restored = any(s.adopt_by is not None for s in unclaimed)

    def _check_runs(self, now: float) -> None:
        """Run timeouts and infeasibility graces; only the runs that have one are looked at."""
        while self._deadlines and self._deadlines[0][0] <= now:
            _, run_id = heapq.heappop(self._deadlines)
            run = self.runs.get(run_id)
            if run is not None and run.status == "running":
                timeout = run.submit.options.timeout
                self._end_run(run, "failed", f"run timed out after {timeout:g} s", now)
        if not self._infeasible_runs or not self.settled(now):
            return
        grace = self.config.infeasible_grace
        for run_id in list(self._infeasible_runs):
            run = self.runs.get(run_id)
            if run is None or run.status != "running" or run.infeasible_since is None:
                self._infeasible_runs.discard(run_id)
            elif now - run.infeasible_since >= grace and not self._awaits_return(run):
                self._infeasible_runs.discard(run_id)
                self._fail_infeasible(run, now)

    # -- placing -----------------------------------------------------------------------

    def schedule(self, now: float) -> None:
        """Place ready nodes; after a restart, only once agents have reported what they run
        (placing earlier could start a second copy of an attempt already running)."""
        if not self._dirty or not self.settled(now):
            return
        self._dirty = False
        cap = self.config.max_parallel
        queue = self._ready
        held: list[tuple[Key, Group]] = []
        blocked = False
        """A group was busy: lower ones get no lease top-up, so they cannot hold capacity
        the busy one waits for."""
        while cap is None or self.in_flight < cap:
            found = queue.pop_group()
            if found is None:
                break
            key, group = found
            index = queue.first(group, _under_run_limit)
            if index is None:
                held.append(found)
                continue
            state = group[index][1]
            request = self._catalog.request(key[1], key[2])
            result = self.pool.place(
                request, key=state.ref_for(state.attempt + 1, self.incarnation)
            )
            if isinstance(result, CannotPlace):
                held.append(found)
                if self._cannot_place(key, group, state, result, blocked, now):
                    break  # let capacity drain towards the starving node
                blocked = blocked or not result.infeasible
                continue
            queue.take(group, index)
            self._dispatch(state, result.worker, result.gpu_devices, now)
            self._chain(state, now)
            queue.restore(key, group)
        for key, group in held:
            queue.restore(key, group)

    def _cannot_place(
        self,
        key: Key,
        group: Group,
        state: NodeState,
        result: CannotPlace,
        blocked: bool,
        now: float,
    ) -> bool:
        """A group the pool cannot place now: infeasible, or busy (queued on leases while
        no group before it was busy); True when it has starved long enough that nothing
        smaller may pass it this time."""
        state.reason = str(result)
        if result.infeasible:
            why = feasibility.task_missing(key[2], self.workers) or str(result)
            for member in self._ready.members(group):
                self._mark_infeasible(member.run, member, why, now)
            return False
        if not blocked:
            self._top_up(key, group, now)
        return now - state.ready_since > self.config.aging

    def _top_up(self, key: Key, group: Group, now: float) -> None:
        """Every worker is busy for this group: queue what its leases have room for on
        their workers, to start as soon as the attempt ahead ends (``leases.py``)."""
        shape = (key[1], key[2])
        cap = self.config.max_parallel
        while (lease := self._leases.room(shape)) is not None:
            if cap is not None and self.in_flight >= cap:
                return
            index = self._ready.first(group, _under_run_limit)
            if index is None:
                return
            state = self._ready.take(group, index)
            self._dispatch(state, lease.worker, (), now, lease)
            self._chain(state, now)

    def _dispatch(
        self,
        state: NodeState,
        worker: str,
        devices: tuple[int, ...],
        now: float,
        lease: Lease | None = None,
        after: NodeState | None = None,
    ) -> None:
        state.attempt += 1
        state.incarnation = self.incarnation
        state.gpu_devices = devices
        state.placed_at = self._listening.heard(now)
        state.reason = ""
        why = f"placed on {worker}" if after is None else f"sent to {worker} after {after.id}"
        self._move(state, "placed", why, now)
        self._track(state, worker)
        ref, request = state.ref, state.node.request
        if lease is not None:
            self._leases.join(lease, ref)
        elif self._leases.eligible(request):
            lease = self._leases.open(ref, worker, (request, state.node.task))
        state.after = None if after is None else after.ref
        sent = assignment(state, devices, None if lease is None else lease.key, after)
        self.out.assign.setdefault(worker, []).append(sent)

    # -- chains --------------------------------------------------------------------------

    def _chain(self, state: NodeState, now: float) -> None:
        """Send, under the lease ``state``'s attempt runs in, the nodes that wait for it
        alone, one after another, each to run right after the one before on that worker
        with its values (``Continuation``): a step of a chain then costs no trip through
        the coordinator. As many as the lease's depth has room for; one more each time a
        step succeeds (``_succeeded``)."""
        lease = self._leases.lease_of(state.ref)
        if lease is None or lease.closed:
            return
        room = self._leases.depth_of(lease.shape) - len(lease.members)
        while room > 0 and (child := self._chainable(state, lease)) is not None:
            self._dispatch(child, lease.worker, (), now, lease, after=state)
            state, room = child, room - 1

    def _chainable(self, state: NodeState, lease: Lease) -> NodeState | None:
        """The node that waits for ``state`` alone and may run after it under ``lease``:
        the same request, a task that worker has, within the run's and the fleet's caps."""
        run = state.run
        if run.status != "running" or state.status not in IN_FLIGHT:
            return None
        down = run.submit.dag.downstream[state.id]
        if len(down) != 1:
            return None
        child = run.nodes[down[0]]
        if child.status != "pending" or child.waiting != 1 or child.id in run.infeasible:
            return None
        node = child.node
        info = self.workers.get(lease.worker)
        if node.request != lease.shape[0] or node.batch is not None or info is None:
            return None
        if info.draining or info.tasks is None or node.task not in info.tasks:
            return None
        cap = self.config.max_parallel
        if (cap is not None and self.in_flight >= cap) or not _under_run_limit(child):
            return None
        return child

    def _chained_to(self, state: NodeState) -> NodeState | None:
        """The node whose attempt in flight was chained to ``state``'s (``_chain``)."""
        ref = state.ref
        for child_id in state.run.submit.dag.downstream[state.id]:
            child = state.run.nodes[child_id]
            if child.after == ref and child.status in IN_FLIGHT:
                return child
        return None

    def _unchain(self, state: NodeState, why: str, now: float) -> None:
        """``state``'s attempt ends without success: what was chained to it will not get
        its values. Cancelled on its worker (the agent would end it unrun anyway) and back
        to waiting, the deepest first; its attempt is over (a late report is stale)."""
        child = self._chained_to(state)
        if child is None:
            return
        self._unchain(child, why, now)
        assert child.worker is not None
        self._send_cancel(child.worker, child.ref, why)
        child.finished_attempt = child.attempt
        self._move(child, "pending", f"upstream {state.id}: {why}", now)

    # -- node endings ------------------------------------------------------------------

    def _succeeded(
        self, state: NodeState, value: JsonValue, ref: PayloadRef | None, now: float
    ) -> None:
        error = store_outputs(state, value, ref)
        if error is not None:
            self._fail(state, error, now)
            return
        run = state.run
        tail = self._chained_to(state)
        self._move(state, "succeeded", "succeeded", now)
        for nxt in run.submit.dag.downstream[state.id]:
            child = run.nodes[nxt]
            child.waiting -= 1
            if child.waiting == 0 and child.status == "pending" and run.status == "running":
                self._make_ready(child, f"{state.id} succeeded", now)
        self._after_node(run, now)
        while tail is not None:
            last, tail = tail, self._chained_to(tail)
            if tail is None:
                self._chain(last, now)

    def _app_failure(self, state: NodeState, error: ErrorInfo, now: float) -> None:
        """Retry per the node's policy; a task that raises ``RetryException`` asks for a
        retry itself, so it gets one even without a policy (up to CONDITIONAL_RETRIES)."""
        policy = state.node.retry
        asked = error.type.rsplit(".", 1)[-1] == "RetryException"
        limit = policy.max_retries or (CONDITIONAL_RETRIES if asked else 0)
        if state.app_retries < limit and (asked or policy.retries(error.type)):
            state.app_retries += 1
            state.error = error
            delay = policy.delay_for(state.app_retries, self._rand())
            self._requeue(state, f"retry after {error.type}", now, not_before=now + delay)
            return
        self._fail(state, error, now)

    def _system_failure(self, state: NodeState, why: str, now: float) -> None:
        state.system_retries += 1
        if state.system_retries > self.config.system_retries:
            self._fail(state, ErrorInfo(type="WorkerLost", message=why), now)
            return
        state.reason = why
        self._requeue(state, why, now)

    def _requeue(self, state: NodeState, why: str, now: float, not_before: float = 0.0) -> None:
        """Its attempt is over and it is to be placed again: queued, or, a chained one
        whose upstream's outcome is not applied yet, waiting for that (then queued at once:
        a retry delay is not kept; its upstream's outcome is normally applied first)."""
        self._unchain(state, why, now)
        self._move(state, "ready", why, now)
        if state.waiting > 0:
            self._move(state, "pending", why, now)
            return
        self._enqueue(state, now, not_before=not_before)

    def _fail(self, state: NodeState, error: ErrorInfo, now: float) -> None:
        self._unchain(state, f"{error.type}: {error.message}", now)
        state.error = error
        state.finished_at = state.finished_at or now
        self._move(state, "failed", f"{error.type}: {error.message}", now)
        run = state.run
        if run.submit.options.on_error == "stop":
            self._end_run(
                run, "failed", f"node {state.id} failed: {error.type}: {error.message}", now
            )
            return
        self._skip_downstream(run, state.id, now)
        self._after_node(run, now)

    def _skip_downstream(self, run: RunState, node_id: str, now: float) -> None:
        stack = list(run.submit.dag.downstream[node_id])
        while stack:
            child = run.nodes[stack.pop()]
            if child.status in ("pending", "ready"):
                child.reason = f"skipped: upstream {node_id} failed"
                self._move(child, "skipped", child.reason, now)
                stack.extend(run.submit.dag.downstream[child.id])

    def _after_node(self, run: RunState, now: float) -> None:
        self._touch(run)
        if run.remaining == 0 and run.status == "running":
            failed = [n.id for n in run.nodes.values() if n.status == "failed"]
            status: RunStatus = "failed" if failed else "succeeded"
            self._end_run(run, status, f"failed nodes: {failed}" if failed else "", now)

    # -- feasibility -------------------------------------------------------------------

    def _check_feasible(self, run: RunState, now: float) -> None:
        for state in run.nodes.values():
            answer = feasibility.why_infeasible(state, self.workers, self.pool, self._catalog)
            if answer is not None:
                self._mark_infeasible(run, state, answer, now)
        if (
            run.infeasible
            and self.config.infeasible_grace <= 0
            and self.settled(now)
            and not self._awaits_return(run)
        ):
            self._fail_infeasible(run, now)

    def _awaits_return(self, run: RunState) -> bool:
        """A worker lost moments ago, or one whose tasks are not known yet, could hold it."""
        requests = (run.nodes[node_id].node.request for node_id in run.infeasible)
        departed = liveness.awaits_return(run, self._departed, self._catalog)
        return departed or self._untold.could_hold(self.pool, requests)

    def _mark_infeasible(self, run: RunState, state: NodeState, why: str, now: float) -> None:
        if feasibility.mark(run, state, why, now):
            self._infeasible_runs.add(run.run_id)
        self._touch(run)

    def _fail_infeasible(self, run: RunState, now: float) -> None:
        reasons = "; ".join(f"{n}: {why}" for n, why in sorted(run.infeasible.items()))
        for node_id in run.infeasible:
            state = run.nodes[node_id]
            if not state.done:
                state.error = ErrorInfo(type="Infeasible", message=run.infeasible[node_id])
                self._move(state, "failed", "infeasible", now)
        self._end_run(run, "failed", f"infeasible: {reasons}", now)

    # -- batches (``batches.py``) --------------------------------------------------------

    def flush_batches(self, now: float) -> None:
        """Form every waiting batch now, full or not (``wait_all`` in process)."""
        self._form_batches(now, everything=True)

    def batch_deadline(self) -> float | None:
        """When a waiting batch may be due: a ``tick`` then forms it."""
        return self._batches.deadline()

    def _form_batches(self, now: float, everything: bool = False) -> None:
        """Not before agents have reported after a restart: stored batch runs claim their
        members back first, so no member is grouped again into a second batch."""
        if self.settled(now):
            for submit in self._batches.due(now, self._taken, everything):
                self.submit(submit, now)

    def _taken(self, run_id: str) -> bool:
        return run_id in self.runs or run_id in self._ended

    def _batch_ended(self, run: RunState, now: float) -> None:
        """A batch run's members end with it; a member run that ended leaves its batch,
        which is cancelled when none is left."""
        endings, orphaned = self._batches.ended(run)
        for end in endings:
            if end.error is not None:
                self._fail(end.member, end.error, now)
            elif end.cancelled:
                self.cancel_run(end.member.run.run_id, end.cancelled, now)
            else:
                self._succeeded(end.member, end.value, end.ref, now)
        if orphaned is not None:
            self.cancel_run(orphaned, "every member of the batch ended", now)

    # -- bookkeeping -------------------------------------------------------------------

    def _make_ready(self, state: NodeState, why: str, now: float) -> None:
        self._move(state, "ready", why, now)
        if not self._batches.hold(state, now):
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
        """The attempt (tracked by ``fly``) runs on ``worker``."""
        state.worker = worker
        info = self.workers.get(worker)
        if info is not None:
            info.attempts.add(state.ref)

    def _started(self, state: NodeState, why: str, now: float) -> None:
        self._move(state, "running", why, now)
        state.started_at = now

    def _send_cancel(self, worker: str, ref: AttemptRef, reason: str) -> None:
        self.out.cancel.setdefault(worker, []).append((ref, reason))

    def _touch(self, run: RunState) -> None:
        self._touched.add(run.run_id)


def _under_run_limit(state: NodeState) -> bool:
    limit = state.run.submit.options.max_parallel
    return limit is None or state.run.in_flight < limit
