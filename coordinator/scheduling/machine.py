"""The run/node state machine: events in, decisions out, no I/O and no clock.

Every public method is an event with the time it happened (``now``). Decisions
accumulate in ``self.out`` until the service takes them (``take()``): which
assignments and cancels to send to which worker, which runs changed (to push
to clients and to persist) and which ended.

Waiting work is retried only when something could have changed its answer:
capacity was released, a worker joined or changed, a node became ready, a
retry delay passed. A scheduling pass asks the pool at most once per distinct
request that is busy, so a deep queue of identical nodes costs one failed
``place`` per pass, not one per node.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import JsonValue

from coordinator.placement.outcome import CannotPlace
from coordinator.pool import ResourceAwareWorkerPool
from coordinator.scheduling.queue import Group, Key, ReadyQueue
from coordinator.scheduling.state import IN_FLIGHT, NodeState, RunState, WorkerInfo
from coordinator.scheduling.tasks import TaskCatalog
from shared.protocol import (
    Assignment,
    AttemptRef,
    ErrorInfo,
    Heartbeat,
    Outcome,
    PayloadRef,
    Register,
    Reject,
)
from shared.resources import WorkerSpec
from shared.runs import RunView, Submit

CANCELLED_BY_AGENT = "AttemptCancelled"


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

    def __bool__(self) -> bool:
        return bool(self.assign or self.cancel or self.changed or self.finished)


class Scheduler:
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

    # -- runs -------------------------------------------------------------------------------

    def submit(self, submit: Submit, now: float) -> RunState:
        if submit.run_id in self.runs:
            return self.runs[submit.run_id]
        run = RunState(submit, submitted_at=now, touched=self._touched)
        self.runs[run.run_id] = run
        run.values.update(submit.inputs)
        run.refs.update(submit.input_refs)
        dag = submit.dag
        for node in dag.nodes:
            run.nodes[node.id] = NodeState(node, run, waiting=len(dag.upstream[node.id]))
        run.remaining = len(run.nodes)
        self._check_feasible(run, now)
        if run.status == "running":
            for state in run.nodes.values():
                if state.waiting == 0:
                    self._make_ready(state, now)
        self._touch(run)
        return run

    def cancel_run(self, run_id: str, reason: str, now: float) -> bool:
        run = self.runs.get(run_id)
        if run is None or run.status != "running":
            return False
        self._end_run(run, "cancelled", reason or "cancelled", now)
        return True

    def forget(self, run_id: str) -> None:
        """Drop a finished run from memory (it stays in the durable store)."""
        run = self.runs.get(run_id)
        if run is not None and run.status != "running":
            del self.runs[run_id]

    def view(self, run_id: str) -> RunView:
        run = self.runs[run_id]
        return RunView(
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

    # -- workers ----------------------------------------------------------------------------

    def register(self, msg: Register, now: float) -> None:
        tasks = frozenset(msg.tasks)
        info = self._worker(
            msg.spec.name, msg.started_at, msg.heartbeat_interval, now, msg.spec, tasks
        )
        if info.tasks != tasks:
            self._set_tasks(info, tasks, now)
        self._reconcile(info, msg.running, now)

    def heartbeat(self, msg: Heartbeat, now: float) -> None:
        info = self._worker(msg.worker, msg.started_at, msg.interval, now, msg.capacity)
        info.cpu_percent, info.available_ram_mb = msg.cpu_percent, msg.available_ram_mb
        if msg.draining and not info.draining:
            info.draining = True
            self.pool.remove_worker(info.name)
        elif not info.draining:
            self.pool.observe(info.name, available_ram_mb=msg.available_ram_mb)
        self._reconcile(info, msg.running, now)

    def worker_left(self, name: str, reason: str, now: float) -> None:
        info = self.workers.pop(name, None)
        if info is None:
            return
        if not info.draining:
            self.pool.remove_worker(name)
        self.out.lost_workers.append((name, reason))
        for ref in list(info.attempts):
            state = self._attempts.get(ref)
            if state is not None:
                self._system_failure(state, f"worker {name} {reason}", now)
        self._dirty = True

    def _worker(
        self,
        name: str,
        started_at: float,
        interval: float,
        now: float,
        spec: WorkerSpec,
        tasks: frozenset[str] | None = None,
    ) -> WorkerInfo:
        info = self.workers.get(name)
        if info is not None and info.started_at != started_at:
            self.worker_left(name, "restarted", now)
            info = None
        if info is None:
            if self._settled_at is None:
                self._settled_at = min(now + 1.5 * interval, self._start_time + self.config.warmup)
            info = self.workers[name] = WorkerInfo(name, spec, started_at, interval, now)
            info.tasks = tasks
            self.pool.add_worker(self._catalog.labelled(spec, tasks))
            self._recheck_infeasible(now)
            self._dirty = True
            return info
        info.last_seen, info.interval = now, interval
        if spec != info.spec and not info.draining:
            info.spec = spec
            for placement in self.pool.update_worker(self._catalog.labelled(spec, info.tasks)):
                state = self._attempts.get(placement.key)  # type: ignore[call-overload]
                if state is not None:
                    self._system_failure(state, "its GPU device disappeared", now)
            self._recheck_infeasible(now)
            self._dirty = True
        return info

    def _reconcile(self, info: WorkerInfo, running: tuple[AttemptRef, ...], now: float) -> None:
        """What the agent says it runs is the truth: adopt what we lost track of, cancel
        what is stale, place again what it never received."""
        self._lost_in_transit(info, running, now)
        for ref in running:
            state = self._attempts.get(ref)
            if state is not None:
                if state.status == "placed":
                    self._started(state, now)
                if state.adopt_by is not None:  # restored from the store: account it again
                    state.adopt_by = None
                    info.attempts.add(ref)
                    if not info.draining and self.pool.reservation(ref) is None:
                        self.pool.adopt(info.name, state.node.request, ref, state.gpu_devices)
                continue
            run = self.runs.get(ref.run_id)
            node = run.nodes.get(ref.node_id) if run is not None else None
            if (
                node is not None
                and not node.done
                and node.status not in IN_FLIGHT
                and ref.attempt >= node.attempt
                and not info.draining
            ):
                self._adopt(node, info, ref, now)
            elif node is None or node.done or ref.attempt < node.attempt:
                self._send_cancel(info.name, ref, "stale attempt")

    def _lost_in_transit(
        self, info: WorkerInfo, running: tuple[AttemptRef, ...], now: float
    ) -> None:
        """An assignment travels on core NATS and can be lost; one neither accepted nor
        listed by its worker's heartbeats for two intervals never arrived."""
        grace = max(2 * info.interval, 1.0)
        listed = set(running)
        for ref in list(info.attempts):
            state = self._attempts.get(ref)
            if (
                state is not None
                and state.status == "placed"
                and ref not in listed
                and now - state.placed_at > grace
            ):
                self._system_failure(state, f"{info.name} never received the assignment", now)

    def _adopt(self, state: NodeState, info: WorkerInfo, ref: AttemptRef, now: float) -> None:
        state.attempt = ref.attempt
        placement = self.pool.adopt(info.name, state.node.request, ref, ())
        state.gpu_devices = placement.gpu_devices
        self._track(state, info.name)
        state.move("running")
        self._in_flight += 1
        state.started_at = state.started_at or now

    def _orphan(self, ref: AttemptRef, worker: str) -> NodeState | None:
        """An attempt this coordinator lost track of (its last write predates the dispatch)
        whose outcome arrives before any heartbeat listed it: it ran, so it counts."""
        run = self.runs.get(ref.run_id)
        state = run.nodes.get(ref.node_id) if run is not None else None
        if (
            run is None
            or state is None
            or run.status != "running"
            or state.done
            or state.status in IN_FLIGHT
            or ref.attempt < state.attempt
        ):
            return None
        state.attempt = ref.attempt
        self._track(state, worker)
        state.move("running")
        self._in_flight += 1
        return state

    def _set_tasks(self, info: WorkerInfo, tasks: frozenset[str], now: float) -> None:
        info.tasks = tasks
        if not info.draining:
            self.pool.update_worker(self._catalog.labelled(info.spec, tasks))
        self._recheck_infeasible(now)
        self._dirty = True

    # -- agent answers ------------------------------------------------------------------------

    def accepted(self, ref: AttemptRef, now: float) -> None:
        state = self._attempts.get(ref)
        if state is not None and state.status == "placed":
            self._started(state, now)

    def rejected(self, msg: Reject, now: float) -> None:
        state = self._attempts.get(msg.ref)
        if state is None or state.status not in IN_FLIGHT:
            return
        self._untrack(state)
        state.rejects += 1
        info = self.workers.get(msg.worker)
        if msg.code == "unknown_task" and info is not None and info.tasks is not None:
            self._set_tasks(info, info.tasks - {state.node.task}, now)
        if state.rejects >= self.config.max_rejects:
            self._fail(state, ErrorInfo(type="Rejected", message=msg.reason), now)
            return
        state.reason = f"rejected by {msg.worker}: {msg.reason}"
        state.move("ready")
        self._enqueue(state, now)

    def outcome(self, msg: Outcome, now: float) -> None:
        state = self._attempts.get(msg.ref) or self._orphan(msg.ref, msg.worker)
        if state is None or state.status not in IN_FLIGHT:
            return  # superseded attempt, or a duplicate
        self._untrack(state)
        state.started_at = msg.started_at
        state.finished_at = msg.finished_at
        if msg.status == "succeeded":
            self._succeeded(state, msg.return_value, msg.return_ref, now)
        elif msg.status == "cancelled" and state.run.status == "running":
            # Cancelled without our asking: the agent was stopped.
            self._system_failure(state, f"cancelled on {msg.worker}", now, untracked=True)
        elif msg.status == "cancelled":
            state.move("cancelled")
        else:
            error = msg.error or ErrorInfo(type="TimeoutError", message="timed out")
            self._app_failure(state, error, now)

    # -- time ---------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        self._check_workers(now)
        while self._delayed and self._delayed[0][0] <= now:
            _, _, state = heapq.heappop(self._delayed)
            if state.status == "ready":
                self._push(state)
                self._dirty = True
        self._check_runs(now)
        self.schedule(now)

    def _check_workers(self, now: float) -> None:
        misses = self.config.heartbeat_misses
        for info in list(self.workers.values()):
            if now - info.last_seen > misses * info.interval:
                self.worker_left(info.name, f"missed {misses} heartbeats", now)
        if self._restored:
            for state in [s for s in self._attempts.values() if s.adopt_by is not None]:
                if state.adopt_by is not None and now >= state.adopt_by:
                    why = "no agent reports it after the coordinator restarted"
                    self._system_failure(state, why, now)
            self._restored = any(s.adopt_by is not None for s in self._attempts.values())

    def _check_runs(self, now: float) -> None:
        grace = self.config.infeasible_grace
        for run in [r for r in self.runs.values() if r.status == "running"]:
            if run.deadline is not None and now >= run.deadline:
                timeout = run.submit.options.timeout
                self._end_run(run, "failed", f"run timed out after {timeout:g} s", now)
            elif (
                run.infeasible_since is not None
                and now - run.infeasible_since >= grace
                and self.settled(now)
            ):
                self._fail_infeasible(run, now)

    def restore(self, submit: Submit, view: RunView, now: float, grace: float) -> RunState:
        """Rebuild a run after a coordinator restart from its stored view.

        In-flight attempts are kept as they were; an agent's heartbeat that lists one
        accounts it again, and one no agent reports within ``grace`` is run again.
        """
        run = RunState(submit, submitted_at=view.submitted_at, touched=self._touched)
        self.runs[run.run_id] = run
        run.values.update(view.outputs)
        run.refs.update(view.output_refs)
        run.values.update({k: v for k, v in submit.inputs.items() if k not in run.values})
        run.refs.update({k: v for k, v in submit.input_refs.items() if k not in run.refs})
        stored = {n.id: n for n in view.nodes}
        dag = submit.dag
        for node in dag.nodes:
            state = run.nodes[node.id] = NodeState(node, run, waiting=0)
            seen = stored.get(node.id)
            if seen is not None:
                state.status, state.attempt, state.worker = seen.status, seen.attempt, seen.worker
                state.gpu_devices, state.error = seen.gpu_devices, seen.error
                state.started_at, state.finished_at = seen.started_at, seen.finished_at
                state.system_retries = seen.system_retries
        for state in run.nodes.values():
            state.waiting = sum(
                1 for up in dag.upstream[state.id] if run.nodes[up].status != "succeeded"
            )
            if state.done:
                continue
            run.remaining += 1
            if state.status in IN_FLIGHT and state.worker is not None:
                run.in_flight += 1
                self._in_flight += 1
                state.adopt_by = now + grace
                self._restored = True
                self._attempts[state.ref] = state
            elif (
                state.status in IN_FLIGHT
                or state.status == "ready"
                or (state.status == "pending" and state.waiting == 0)
            ):
                state.status = "pending"
                self._make_ready(state, now)
        self._touch(run)
        if run.remaining == 0:
            self._after_node(run, now)
        return run

    # -- placing --------------------------------------------------------------------------------

    def schedule(self, now: float) -> None:
        """Place ready nodes; after a restart, only once agents have reported what they run
        (placing earlier could start a second copy of an attempt already running)."""
        if not self._dirty or not self.settled(now):
            return
        self._dirty = False
        cap = self.config.max_parallel
        queue = self._ready
        held: list[tuple[Key, Group]] = []
        while cap is None or self._in_flight < cap:
            found = queue.pop_group()
            if found is None:
                break
            key, group = found
            index = queue.first(group, self._under_run_limit)
            if index is None:
                held.append(found)
                continue
            state = group[index][1]
            request = self._catalog.request(key[1], key[2])
            result = self.pool.place(request, key=state.ref_for(state.attempt + 1))
            if isinstance(result, CannotPlace):
                held.append(found)
                state.reason = str(result)
                if result.infeasible:
                    for member in queue.members(group):
                        self._mark_infeasible(member.run, member, str(result), now)
                elif now - state.ready_since > self.config.aging:
                    break  # let capacity drain towards the starving node
                continue
            del group[index]
            self._dispatch(state, result.worker, result.gpu_devices, now)
            queue.restore(key, group)
        for key, group in held:
            queue.restore(key, group)

    @staticmethod
    def _under_run_limit(state: NodeState) -> bool:
        limit = state.run.submit.options.max_parallel
        return limit is None or state.run.in_flight < limit

    def _dispatch(
        self, state: NodeState, worker: str, devices: tuple[int, ...], now: float
    ) -> None:
        state.attempt += 1
        state.gpu_devices = devices
        state.placed_at = now
        state.reason = ""
        state.move("placed")
        self._in_flight += 1
        self._track(state, worker)
        self.out.assign.setdefault(worker, []).append(self._assignment(state, devices))

    def _assignment(self, state: NodeState, devices: tuple[int, ...]) -> Assignment:
        node, run = state.node, state.run
        kwargs = dict(node.kwargs)
        arg_refs: dict[str, PayloadRef] = {}
        for param, name in node.inputs.items():
            if name in run.refs:
                kwargs[param] = None
                arg_refs[param] = run.refs[name]
            else:
                kwargs[param] = run.values.get(name)
        return Assignment(
            ref=state.ref,
            task_name=node.task,
            args=node.args,
            kwargs=kwargs,
            arg_refs=arg_refs,
            labels=node.labels,
            request=node.request,
            gpu_devices=devices,
            timeout=node.timeout,
        )

    # -- node endings ---------------------------------------------------------------------------

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
        policy = state.node.retry
        if state.app_retries < policy.max_retries and policy.retries(error.type):
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

    # -- feasibility ----------------------------------------------------------------------------

    def _check_feasible(self, run: RunState, now: float) -> None:
        for state in run.nodes.values():
            answer = self._infeasible(state)
            if answer is not None:
                self._mark_infeasible(run, state, answer, now)
        if run.infeasible and self.config.infeasible_grace <= 0 and self.settled(now):
            self._fail_infeasible(run, now)

    def _infeasible(self, state: NodeState) -> str | None:
        task = state.node.task
        with_task = [w for w in self.workers.values() if w.tasks is None or task in w.tasks]
        if self.workers and not with_task:
            return f"no worker has task {task!r}"
        answer = self.pool.check(self._catalog.request(state.node.request, task))
        return None if answer is None else f"{state.node.request.describe()}: {answer}"

    def _mark_infeasible(self, run: RunState, state: NodeState, why: str, now: float) -> None:
        state.reason = f"infeasible: {why}"
        run.infeasible[state.id] = why
        if run.infeasible_since is None:
            run.infeasible_since = now
        run.changed.add(state.id)
        self._touch(run)

    def _recheck_infeasible(self, now: float) -> None:
        for run in self.runs.values():
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

    # -- bookkeeping ----------------------------------------------------------------------------

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
