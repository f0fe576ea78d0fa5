"""The scheduler's own records: runs, nodes, workers. Mutable dataclasses, no I/O.

``TRANSITIONS`` is the node lifecycle as a table; every status change goes
through ``NodeState.move``, so an impossible change (a finished node running
again) is a bug caught where it happens, not a corrupt run discovered later.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import JsonValue

from shared.dag import Node
from shared.resources import WorkerSpec
from shared.wire.protocol import AttemptRef, ErrorInfo, PayloadRef
from shared.wire.runs import TERMINAL_NODE, NodeStatus, NodeView, RunStatus, RunView, Submit

# pending -> running: an attempt adopted after a restart, reported before its upstream's
# outcome was applied again.
TRANSITIONS: dict[NodeStatus, frozenset[NodeStatus]] = {
    "pending": frozenset({"ready", "skipped", "cancelled", "failed", "running"}),
    "ready": frozenset({"placed", "failed", "skipped", "cancelled", "running"}),
    "placed": frozenset({"running", "ready", "succeeded", "failed", "cancelled"}),
    "running": frozenset({"ready", "succeeded", "failed", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
    "skipped": frozenset(),
}
IN_FLIGHT: frozenset[NodeStatus] = frozenset({"placed", "running"})


@dataclass(eq=False, slots=True)
class NodeState:
    node: Node
    run: RunState
    waiting: int
    status: NodeStatus = "pending"
    attempt: int = 0
    finished_attempt: int = 0
    """The last attempt whose outcome was applied: a report of it is never adopted again."""
    worker: str | None = None
    gpu_devices: tuple[int, ...] = ()
    app_retries: int = 0
    system_retries: int = 0
    rejects: int = 0
    not_before: float = 0.0
    ready_since: float = 0.0
    placed_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    error: ErrorInfo | None = None
    reason: str = ""
    adopt_by: float | None = None
    """After a restart: when an in-flight attempt no agent has reported is given up."""
    seq: int = 0

    @property
    def id(self) -> str:
        return self.node.id

    @property
    def ref(self) -> AttemptRef:
        """The current attempt (ids were validated with the DAG, so no validation here)."""
        return self.ref_for(self.attempt)

    def ref_for(self, attempt: int) -> AttemptRef:
        return AttemptRef.model_construct(run_id=self.run.run_id, node_id=self.id, attempt=attempt)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_NODE

    def move(self, to: NodeStatus) -> None:
        if to not in TRANSITIONS[self.status]:
            raise AssertionError(f"node {self.run.run_id}/{self.id}: {self.status} -> {to}")
        if self.status in IN_FLIGHT and to not in IN_FLIGHT:
            self.run.in_flight -= 1
        elif to in IN_FLIGHT and self.status not in IN_FLIGHT:
            self.run.in_flight += 1
        if to in TERMINAL_NODE:
            self.run.remaining -= 1
        self.status = to
        self.run.changed.add(self.id)
        self.run.touched.add(self.run.run_id)

    def view(self) -> NodeView:
        return NodeView(
            id=self.id,
            task=self.node.task,
            status=self.status,
            attempt=self.attempt,
            worker=self.worker,
            gpu_devices=self.gpu_devices,
            started_at=self.started_at,
            finished_at=self.finished_at,
            error=self.error,
            reason=self.reason,
            system_retries=self.system_retries,
        )


@dataclass(eq=False, slots=True)
class RunState:
    submit: Submit
    submitted_at: float
    status: RunStatus = "running"
    nodes: dict[str, NodeState] = field(default_factory=dict)
    values: dict[str, JsonValue] = field(default_factory=dict)
    refs: dict[str, PayloadRef] = field(default_factory=dict)
    in_flight: int = 0
    remaining: int = 0
    finished_at: float | None = None
    error: str = ""
    infeasible: dict[str, str] = field(default_factory=dict)
    infeasible_since: float | None = None
    final_view: RunView | None = None
    changed: set[str] = field(default_factory=set)
    """Nodes changed since the last update was sent."""
    touched: set[str] = field(default_factory=set)
    """The scheduler's set of changed runs, shared by all its runs."""

    @property
    def run_id(self) -> str:
        return self.submit.run_id

    @property
    def deadline(self) -> float | None:
        timeout = self.submit.options.timeout
        return None if timeout is None else self.submitted_at + timeout


@dataclass(eq=False, slots=True)
class WorkerInfo:
    name: str
    spec: WorkerSpec
    started_at: float
    interval: float
    last_seen: float
    tasks: frozenset[str] | None = None
    draining: bool = False
    attempts: set[AttemptRef] = field(default_factory=set)
    cpu_percent: float = 0.0
    available_ram_mb: int = 0
