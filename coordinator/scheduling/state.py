"""The scheduler's own records: runs, nodes, workers, its configuration and the
decisions it hands out. Mutable dataclasses and pure reads of them, no I/O.

Statuses are only ever changed by ``Scheduler._move`` (see ``transitions.py``): these
records hold state, the scheduler owns how it changes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

from pydantic import JsonValue

from coordinator.scheduling.transitions import Step, history
from shared.dag import Node
from shared.resources import WorkerSpec
from shared.wire.protocol import Assignment, AttemptRef, ErrorInfo, PayloadRef
from shared.wire.runs import TERMINAL_NODE, NodeStatus, NodeView, RunStatus, RunView, Submit


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

    def __bool__(self) -> bool:
        return bool(self.assign or self.cancel or self.changed or self.finished)


IN_FLIGHT: frozenset[NodeStatus] = frozenset({"placed", "running"})


@dataclass(eq=False, slots=True)
class NodeState:
    node: Node
    run: RunState
    waiting: int
    status: NodeStatus = "pending"
    attempt: int = 0
    incarnation: str = ""
    """The coordinator lifetime that made the current attempt (``AttemptRef.incarnation``);
    empty for one restored from the store until an agent reports it."""
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
    batch: str | None = None
    """A batch member's batch run, once formed (``batches.py``)."""
    seq: int = 0
    history: deque[Step] = field(default_factory=history)
    """The last few status changes, for the error an impossible one raises."""

    @property
    def id(self) -> str:
        return self.node.id

    @property
    def ref(self) -> AttemptRef:
        """The current attempt (ids were validated with the DAG, so no validation here)."""
        return self.ref_for(self.attempt, self.incarnation)

    def ref_for(self, attempt: int, incarnation: str) -> AttemptRef:
        return AttemptRef.model_construct(
            run_id=self.run.run_id, node_id=self.id, attempt=attempt, incarnation=incarnation
        )

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_NODE

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
            batch=self.batch,
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

    def view(self) -> RunView:
        """The run as clients see it; an ended run cannot change, so its view is built once
        (the final push and the final checkpoint both need it)."""
        if self.final_view is not None:
            return self.final_view
        view = RunView(
            run_id=self.run_id,
            name=self.submit.name,
            status=self.status,
            submitted_at=self.submitted_at,
            finished_at=self.finished_at,
            nodes=tuple(n.view() for n in self.nodes.values()),
            outputs=self.values,
            output_refs=self.refs,
            error=self.error,
            edges=self.submit.dag.edges,
        )
        if self.status != "running":
            self.final_view = view
        return view


@dataclass(eq=False, slots=True)
class WorkerInfo:
    name: str
    spec: WorkerSpec
    started_at: float
    interval: float
    last_seen: float
    tasks: frozenset[str] | None = None
    """What it may be sent (None: not told yet, so nothing); less than it registered after
    an ``unknown_task`` reject."""
    registered: str | None = None
    """The ``task_digest`` of the set it registered, which its heartbeats must prove."""
    draining: bool = False
    attempts: set[AttemptRef] = field(default_factory=set)
    cpu_percent: float = 0.0
    available_ram_mb: int = 0


def store_outputs(state: NodeState, value: JsonValue, ref: PayloadRef | None) -> ErrorInfo | None:
    """Keep a node's result under its declared output names; the error when its shape does
    not match them (nothing is stored then)."""
    run, outputs = state.run, state.node.outputs
    if len(outputs) == 1:
        if ref is not None:
            run.refs[outputs[0]] = ref
        else:
            run.values[outputs[0]] = value
    elif len(outputs) > 1:
        if ref is not None or not isinstance(value, list) or len(value) != len(outputs):
            got = "a stored value" if ref is not None else _shape(value)
            return ErrorInfo(
                type="OutputMismatch",
                message=f"declares {len(outputs)} outputs {list(outputs)}, returned {got}",
            )
        run.values.update(zip(outputs, value, strict=True))
    return None


def assignment(
    state: NodeState, devices: tuple[int, ...], lease: AttemptRef | None = None
) -> Assignment:
    """What the worker is sent for the node's current attempt: its inputs as values, or as
    references to stored payloads."""
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
        reply=run.submit.notify if len(run.nodes) == 1 else None,
        lease=lease,
    )


def _shape(value: JsonValue) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return f"a {type(value).__name__}"
