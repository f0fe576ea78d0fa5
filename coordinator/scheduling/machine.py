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

import dataclasses
import heapq

from pydantic import JsonValue

from coordinator.placement.outcome import CannotPlace
from coordinator.scheduling.core import ENDED_MEMORY, Decisions, SchedulerConfig
from coordinator.scheduling.queue import Group, Key
from coordinator.scheduling.recovery import Recovery
from coordinator.scheduling.state import IN_FLIGHT, NodeState, RunState, WorkerInfo
from shared.resources import WorkerSpec
from shared.wire.protocol import (
    Assignment,
    AttemptRef,
    ErrorInfo,
    Heartbeat,
    Outcome,
    PayloadRef,
    Register,
    Reject,
)
from shared.wire.runs import Submit

__all__ = ["Decisions", "Scheduler", "SchedulerConfig"]


class Scheduler(Recovery):
    # -- runs --------------------------------------------------------------------------

    def submit(self, submit: Submit, now: float) -> RunState | None:
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
                    self._make_ready(state, now)
        self._touch(run)
        return run

    def set_max_parallel(self, limit: int | None) -> None:
        """The global cap on attempts in flight, changed while running (``None``: none)."""
        self.config = dataclasses.replace(self.config, max_parallel=limit)
        self._dirty = True

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
            self._ended[run_id] = None
            if len(self._ended) > ENDED_MEMORY:
                del self._ended[next(iter(self._ended))]

    # -- workers -----------------------------------------------------------------------

    def register(self, msg: Register, now: float) -> None:
        tasks = frozenset(msg.tasks)
        info = self._worker(
            msg.spec.name, msg.started_at, msg.heartbeat_interval, now, msg.spec, tasks
        )
        if info is None:
            return
        if info.tasks != tasks:
            self._set_tasks(info, tasks, now)
        self._reconcile(info, msg.running, now)

    def heartbeat(self, msg: Heartbeat, now: float) -> None:
        info = self._worker(msg.worker, msg.started_at, msg.interval, now, msg.capacity)
        if info is None:
            return
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
            info = self.workers[name] = WorkerInfo(name, spec, started_at, interval, now)
            info.tasks = tasks
            self._expect(info)
            self.pool.add_worker(self._catalog.labelled(spec, tasks))
            self._recheck_infeasible(now)
            self._dirty = True
            return info
        info.last_seen, info.interval = now, interval
        self._expect(info)
        if spec != info.spec and not info.draining:
            info.spec = spec
            for placement in self.pool.update_worker(self._catalog.labelled(spec, info.tasks)):
                state = self._attempts.get(placement.key)  # type: ignore[call-overload]
                if state is not None:
                    self._system_failure(state, "its GPU device disappeared", now)
            self._recheck_infeasible(now)
            self._dirty = True
        return info

    def _set_tasks(self, info: WorkerInfo, tasks: frozenset[str], now: float) -> None:
        info.tasks = tasks
        if not info.draining:
            self.pool.update_worker(self._catalog.labelled(info.spec, tasks))
        self._recheck_infeasible(now)
        self._dirty = True

    # -- agent answers -----------------------------------------------------------------

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
        if state.worker is not None and state.worker != msg.worker:
            return  # not from the worker the attempt was given to
        self._untrack(state)
        state.finished_attempt = msg.ref.attempt
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

    # -- time --------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        self._check_workers(now)
        while self._delayed and self._delayed[0][0] <= now:
            _, _, state = heapq.heappop(self._delayed)
            if state.status == "ready":
                self._push(state)
                self._dirty = True
        self._check_runs(now)
        self.schedule(now)

    def _expect(self, info: WorkerInfo) -> None:
        """Note when this worker is lost unless heard from again (a heap, so the check on
        every event costs O(log workers), not a scan)."""
        deadline = info.last_seen + self.config.heartbeat_misses * info.interval
        heapq.heappush(self._silences, (deadline, info.name, info.last_seen))

    def _check_workers(self, now: float) -> None:
        misses = self.config.heartbeat_misses
        while self._silences and self._silences[0][0] < now:
            _, name, seen = heapq.heappop(self._silences)
            info = self.workers.get(name)
            if info is not None and info.last_seen == seen:  # else heard from since
                self.worker_left(name, f"missed {misses} heartbeats", now)
        if self._restored:
            unclaimed = [s for s in self._attempts.values() if s.adopt_by is not None]
            for state in unclaimed:
                # Read again: failing one attempt can end its run, which clears the others.
                if state.adopt_by is not None and now >= state.adopt_by:
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
            elif now - run.infeasible_since >= grace:
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
        for param, names in node.inputs.items():
            if isinstance(names, str):
                if names in run.refs:
                    kwargs[param] = None
                    arg_refs[param] = run.refs[names]
                else:
                    kwargs[param] = run.values.get(names)
                continue
            values: list[JsonValue] = []
            for index, name in enumerate(names):
                values.append(run.values.get(name))
                if name in run.refs:
                    arg_refs[f"{param}.{index}"] = run.refs[name]
            kwargs[param] = values
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
