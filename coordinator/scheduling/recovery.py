"""What a restarted coordinator needs: rebuild runs from the store and reconcile them
with what agents report. Part of the scheduler (see ``core.py``); pure."""

from __future__ import annotations

import heapq

from coordinator.scheduling.core import SchedulerCore
from coordinator.scheduling.state import IN_FLIGHT, NodeState, RunState, WorkerInfo
from shared.wire.protocol import AttemptRef
from shared.wire.runs import RunView, Submit


class Recovery(SchedulerCore):
    # -- recovery after a restart ------------------------------------------------------

    def restore(self, submit: Submit, view: RunView, now: float, grace: float) -> RunState:
        """Rebuild a run after a coordinator restart from its stored view.

        In-flight attempts are kept as they were; an agent's heartbeat that lists one
        accounts it again, and one no agent reports within ``grace`` is run again.
        """
        run = RunState(submit, submitted_at=view.submitted_at, touched=self._touched)
        self.runs[run.run_id] = run
        if run.deadline is not None:
            heapq.heappush(self._deadlines, (run.deadline, run.run_id))
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
                if seen.error is not None:  # its last attempt ended (and is being retried)
                    state.finished_attempt = seen.attempt
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
                    self._track(state, info.name)  # on the worker running it, stored or not
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
                and ref.attempt > node.finished_attempt
                and not info.draining
            ):
                self._adopt(node, info, ref, now)
            elif (
                node is None
                or node.done
                or ref.attempt <= node.finished_attempt
                or (ref.attempt < node.attempt)
            ):
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
            or ref.attempt <= state.finished_attempt
        ):
            return None
        state.attempt = ref.attempt
        self._track(state, worker)
        state.move("running")
        self._in_flight += 1
        return state
