"""What a restarted coordinator needs, as pure functions the scheduler calls: rebuild a
run's records from its stored view, and judge what an agent reports against them.

Nothing here changes a node's status: ``Scheduler.restore`` and its adoption paths move
nodes through the transition table like every other event.
"""

from __future__ import annotations

from coordinator.scheduling.state import IN_FLIGHT, NodeState, RunState, WorkerInfo
from shared.wire.protocol import AttemptRef
from shared.wire.runs import TERMINAL_NODE, NodeStatus, RunView, Submit


def rebuild(
    submit: Submit, view: RunView, touched: set[str]
) -> tuple[RunState, dict[str, NodeStatus]]:
    """A run's records from its stored view, every node still ``pending``, and the status
    each node should be given back (see ``restored_status``)."""
    run = RunState(submit, submitted_at=view.submitted_at, touched=touched)
    run.values.update(view.outputs)
    run.refs.update(view.output_refs)
    run.values.update({k: v for k, v in submit.inputs.items() if k not in run.values})
    run.refs.update({k: v for k, v in submit.input_refs.items() if k not in run.refs})
    stored = {n.id: n for n in view.nodes}
    statuses: dict[str, NodeStatus] = {}
    for node in submit.dag.nodes:
        state = run.nodes[node.id] = NodeState(node, run, waiting=0)
        seen = stored.get(node.id)
        if seen is None:
            statuses[node.id] = "pending"
            continue
        statuses[node.id] = seen.status
        state.attempt, state.worker = seen.attempt, seen.worker
        state.gpu_devices, state.error = seen.gpu_devices, seen.error
        state.started_at, state.finished_at = seen.started_at, seen.finished_at
        state.system_retries = seen.system_retries
        if seen.error is not None:  # its last attempt ended (and is being retried)
            state.finished_attempt = seen.attempt
    for state in run.nodes.values():
        state.waiting = sum(
            1 for up in submit.dag.upstream[state.id] if statuses[up] != "succeeded"
        )
    run.remaining = len(run.nodes)
    return run, statuses


def restored_status(state: NodeState, stored: NodeStatus) -> NodeStatus:
    """The status a rebuilt node takes back: a finished one its own; an attempt in flight on
    a known worker too (to be adopted, or run again after the grace); anything else waits
    (``pending``) and is made ready again if nothing upstream is left."""
    if stored in TERMINAL_NODE or (stored in IN_FLIGHT and state.worker is not None):
        return stored
    return "pending"


def needs_ready(state: NodeState, stored: NodeStatus) -> bool:
    """After a restore: a node that was ready, or whose attempt is lost with its worker
    unknown, or that waits for nothing, goes back on the queue."""
    return state.status == "pending" and (
        stored in IN_FLIGHT or stored == "ready" or state.waiting == 0
    )


def adoptable(node: NodeState | None, ref: AttemptRef, info: WorkerInfo) -> bool:
    """An attempt an agent runs that the coordinator lost track of (its last write predates
    the dispatch) and that is not superseded: it is taken as the node's attempt."""
    return (
        node is not None
        and not node.done
        and node.status not in IN_FLIGHT
        and ref.attempt >= node.attempt
        and ref.attempt > node.finished_attempt
        and not info.draining
    )


def stale(node: NodeState | None, ref: AttemptRef) -> bool:
    """An attempt an agent runs that no longer counts: its node is gone or finished, or a
    later attempt replaced it, or another coordinator lifetime's attempt of the same
    number (the node's own is tracked and claimed)."""
    return (
        node is None
        or node.done
        or ref.attempt <= node.finished_attempt
        or (ref.attempt < node.attempt)
        or (node.status in IN_FLIGHT and node.adopt_by is None and ref != node.ref)
    )


def unnamed_restored(state: NodeState, ref: AttemptRef) -> bool:
    """``ref`` reports the node's restored attempt (same number), which no agent has
    reported yet and whose coordinator lifetime the store did not keep."""
    return (
        state.adopt_by is not None
        and state.status in IN_FLIGHT
        and state.attempt == ref.attempt
        and state.incarnation == ""
        and ref.incarnation != ""
    )


def orphan_counts(run: RunState | None, state: NodeState | None, ref: AttemptRef) -> bool:
    """An outcome for an attempt nobody tracks counts if it is the node's newest attempt,
    not yet finished, in a run still going."""
    return not (
        run is None
        or state is None
        or run.status != "running"
        or state.done
        or state.status in IN_FLIGHT
        or ref.attempt < state.attempt
        or ref.attempt <= state.finished_attempt
    )


def lost_in_transit(
    state: NodeState | None, listed: set[AttemptRef], grace: float, now: float
) -> bool:
    """An assignment travels on core NATS and can be lost: one neither accepted nor listed
    by its worker's heartbeats for ``grace`` (two intervals) never arrived."""
    return (
        state is not None
        and state.status == "placed"
        and state.ref not in listed
        and now - state.placed_at > grace
    )
