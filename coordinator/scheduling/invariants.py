"""What must hold between the scheduler's books after every event (``validate_state``).

Each check compares two records kept apart (the pool's reservations and the tracked
attempts, a run's counts and its nodes' statuses, the queue and the ready nodes), so a
bug that updates one and not the other is caught at the event that caused it, not as
leaked capacity or a run that never ends. Pure reads; AssertionError with the evidence.
"""

from __future__ import annotations

from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.scheduling.batches import Batches
from coordinator.scheduling.leases import Leases
from coordinator.scheduling.queue import ReadyQueue
from coordinator.scheduling.state import IN_FLIGHT, NodeState, RunState, WorkerInfo
from coordinator.scheduling.stopping import StoppingAttempts
from shared.wire.protocol import AttemptRef
from shared.wire.runs import TERMINAL_NODE


def validate(
    runs: dict[str, RunState],
    workers: dict[str, WorkerInfo],
    attempts: dict[AttemptRef, NodeState],
    pool: ResourceAwareWorkerPool,
    ready: ReadyQueue,
    delayed: list[tuple[float, int, NodeState]],
    stopping: StoppingAttempts,
    batches: Batches,
    leases: Leases,
) -> None:
    _attempts_are_reserved(workers, attempts, pool, stopping, leases)
    _leases_hold_their_members(attempts, stopping, leases)
    _workers_list_tracked_attempts(workers, attempts)
    for run in runs.values():
        _run_counts(run, attempts)
    batches.validate()
    _ready_nodes_are_queued(runs, ready, delayed, batches)


def _attempts_are_reserved(
    workers: dict[str, WorkerInfo],
    attempts: dict[AttemptRef, NodeState],
    pool: ResourceAwareWorkerPool,
    stopping: StoppingAttempts,
    leases: Leases,
) -> None:
    """Every reservation is a tracked attempt on the same worker, a cancelled one its
    agent has not reported ended (``stopping.py``), or a lease with a member; every
    tracked attempt on a live, non-draining worker holds one, itself or through its
    lease (unless restored and not yet reported)."""
    for placement in pool.reservations():
        lease = leases.held(placement.key)  # type: ignore[arg-type]
        if lease is not None:
            assert lease.members, f"lease {lease.key.key} is reserved with no member"
            assert lease.worker == placement.worker, (
                f"lease {lease.key.key} is reserved on {placement.worker}, held on {lease.worker}"
            )
            continue
        if placement.key in stopping:
            key: AttemptRef = placement.key  # type: ignore[assignment]
            assert key not in attempts, f"{key.key} is both tracked and stopping"
            assert stopping.worker(key) == placement.worker, (
                f"{key.key} is reserved on {placement.worker}, stopping on {stopping.worker(key)}"
            )
            continue
        state = attempts.get(placement.key)  # type: ignore[call-overload]
        assert state is not None, f"reservation {placement.key} is held for no tracked attempt"
        assert state.worker == placement.worker, (
            f"{state.ref.key} is reserved on {placement.worker} but tracked on {state.worker}"
        )
    for ref, state in attempts.items():
        assert state.ref == ref, f"attempt {ref.key} is tracked as node attempt {state.ref.key}"
        assert state.status in IN_FLIGHT, f"attempt {ref.key} is tracked while {state.status}"
        info = workers.get(state.worker or "")
        if state.adopt_by is None and info is not None and not info.draining:
            lease = leases.lease_of(ref)
            assert pool.reservation(ref if lease is None else lease.key) is not None, (
                f"attempt {ref.key} on {state.worker} holds no reservation"
            )


def _leases_hold_their_members(
    attempts: dict[AttemptRef, NodeState], stopping: StoppingAttempts, leases: Leases
) -> None:
    """A lease's members are attempts in flight on its worker, or cancelled ones their
    agent has not reported ended; never more than ``depth`` of them."""
    for lease in leases:
        assert 0 < len(lease.members) <= leases.depth, (
            f"lease {lease.key.key} has {len(lease.members)} members (depth {leases.depth})"
        )
        for ref in lease.members:
            assert leases.lease_of(ref) is lease, f"{ref.key} is not in its lease's books"
            state = attempts.get(ref)
            where = state.worker if state is not None else stopping.worker(ref)
            assert where == lease.worker, (
                f"{ref.key} of lease {lease.key.key} on {lease.worker} is on {where}"
            )


def _workers_list_tracked_attempts(
    workers: dict[str, WorkerInfo], attempts: dict[AttemptRef, NodeState]
) -> None:
    for name, info in workers.items():
        for ref in info.attempts:
            state = attempts.get(ref)
            assert state is not None, f"{name} lists attempt {ref.key}, which is not tracked"
            assert state.worker == name, f"{name} lists {ref.key}, tracked on {state.worker}"


def _run_counts(run: RunState, attempts: dict[AttemptRef, NodeState]) -> None:
    """A run's counts are those of its nodes' statuses; each node in flight is tracked."""
    flying = [s for s in run.nodes.values() if s.status in IN_FLIGHT]
    left = sum(1 for s in run.nodes.values() if s.status not in TERMINAL_NODE)
    assert run.in_flight == len(flying), (
        f"run {run.run_id}: in_flight {run.in_flight}, {len(flying)} nodes in flight"
    )
    assert run.remaining == left, f"run {run.run_id}: remaining {run.remaining}, {left} left"
    for state in flying:
        assert attempts.get(state.ref) is state, (
            f"node {run.run_id}/{state.id} is {state.status} without a tracked attempt"
        )
    if run.status != "running":
        assert left == 0, f"run {run.run_id} is {run.status} with {left} nodes not finished"
        return
    for state in run.nodes.values():
        if state.status == "pending":
            assert state.waiting > 0, f"node {run.run_id}/{state.id} pending for nothing"
        elif state.after is not None and state.waiting:
            _chained(run, state, state.after)


def _chained(run: RunState, state: NodeState, after: AttemptRef) -> None:
    """A node sent before its upstream succeeded (``_chain``; not one an agent reported
    after a restart) waits for that one alone, in flight on the same worker."""
    name = f"node {run.run_id}/{state.id}"
    assert state.status in IN_FLIGHT, f"{name} is chained while {state.status}"
    assert state.waiting == 1, f"{name} is chained and waits for {state.waiting} nodes"
    up = run.nodes.get(after.node_id)
    flying = up is not None and up.status in IN_FLIGHT and up.ref == after
    assert flying, f"{name} is chained to {after.key}, which is not in flight"
    assert up is not None
    assert up.worker == state.worker, f"{name} runs on {state.worker}, its upstream elsewhere"


def _ready_nodes_are_queued(
    runs: dict[str, RunState],
    ready: ReadyQueue,
    delayed: list[tuple[float, int, NodeState]],
    batches: Batches,
) -> None:
    """The queue holds exactly the ready nodes (a done node is never placed again) and
    every ready node is queued, waiting out its retry delay or, a batch member, kept by
    ``batches`` (none is forgotten)."""
    queued = {id(s) for s in ready.states()} | {id(s) for s in batches.members()}
    waiting = {id(s) for _, seq, s in delayed if s.seq == seq and s.status == "ready"}
    for state in ready.states():
        assert state.status == "ready", f"node {state.run.run_id}/{state.id} queued while done"
        assert state.run.status == "running", f"node {state.id} queued in an ended run"
        assert id(state) not in waiting, f"node {state.id} both queued and delayed"
    for run in runs.values():
        for state in run.nodes.values():
            if state.status == "ready":
                assert id(state) in queued | waiting, (
                    f"node {run.run_id}/{state.id} is ready but neither queued nor delayed"
                )
