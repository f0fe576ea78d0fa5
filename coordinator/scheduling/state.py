"""The scheduler's own records of runs and nodes, and pure reads of them, no I/O; its
configuration, decisions and workers are in ``records.py`` (re-exported here).

Statuses are only ever changed by ``Scheduler._move`` (see ``transitions.py``): these
records hold state, the scheduler owns how it changes.
"""

from __future__ import annotations

from pydantic import JsonValue

from coordinator.scheduling.records import Decisions, SchedulerConfig, WorkerInfo
from coordinator.scheduling.transitions import HISTORY, Step
from shared.dag import Node
from shared.wire.protocol import Assignment, AttemptRef, Continuation, ErrorInfo, PayloadRef
from shared.wire.runs import TERMINAL_NODE, NodeStatus, NodeView, RunStatus, RunView, Submit

__all__ = [
    "IN_FLIGHT",
    "Decisions",
    "History",
    "NodeState",
    "RunState",
    "SchedulerConfig",
    "WorkerInfo",
    "assignment",
    "store_outputs",
]

IN_FLIGHT: frozenset[NodeStatus] = frozenset({"placed", "running"})
_QUEUED = RunView(run_id="queued")


class History(list[Step]):
    """A node's last ``HISTORY`` status changes (a list: a deque costs 600 bytes a node)."""

    __slots__ = ()

    def append(self, step: Step) -> None:
        super().append(step)
        if len(self) > HISTORY:
            del self[0]


class NodeState:
    """One node of a run. Its ``Node`` is its run's (``RunState.submit``): while the run
    is dormant (see ``RunState``) it is read back with it on first use."""

    __slots__ = (
        "_node",
        "_ref",
        "adopt_by",
        "after",
        "app_retries",
        "attempt",
        "batch",
        "error",
        "finished_at",
        "finished_attempt",
        "gpu_devices",
        "history",
        "id",
        "incarnation",
        "not_before",
        "placed_at",
        "ready_since",
        "reason",
        "rejects",
        "run",
        "seq",
        "started_at",
        "status",
        "system_retries",
        "task",
        "waiting",
        "worker",
    )  # fmt: skip

    def __init__(self, node: Node, run: RunState, waiting: int) -> None:
        self._node: Node | None = node
        self.run = run
        self.id: str = node.id
        self.task: str = node.task
        self.waiting = waiting
        self.status: NodeStatus = "pending"
        self.attempt = 0
        self.incarnation = ""
        """The coordinator lifetime that made the current attempt (``AttemptRef.incarnation``);
        empty for one restored from the store until an agent reports it."""
        self.finished_attempt = 0
        """The last attempt whose outcome was applied: a report of it is never adopted again."""
        self.worker: str | None = None
        self.gpu_devices: tuple[int, ...] = ()
        self.app_retries = 0
        self.system_retries = 0
        self.rejects = 0
        self.not_before = 0.0
        self.ready_since = 0.0
        self.placed_at = 0.0
        """On the clock of time heard (``Listening.heard``), as ``adopt_by``."""
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.error: ErrorInfo | None = None
        self.reason = ""
        self.adopt_by: float | None = None
        """After a restart: when an in-flight attempt no agent has reported is given up."""
        self.batch: str | None = None
        """A batch member's batch run, once formed (``batches.py``)."""
        self.after: AttemptRef | None = None
        """The upstream attempt this node's attempt in flight was chained to: sent before
        that one ended, to run after it on the same worker (``Scheduler._chain``)."""
        self.seq = 0
        self.history = History()
        """The last few status changes, for the error an impossible one raises."""
        self._ref: AttemptRef | None = None

    @property
    def node(self) -> Node:
        if self._node is None:
            self.run.wake()
            assert self._node is not None
        return self._node

    @property
    def ref(self) -> AttemptRef:
        """The current attempt (ids were validated with the DAG, so no validation here)."""
        return self.ref_for(self.attempt, self.incarnation)

    def ref_for(self, attempt: int, incarnation: str) -> AttemptRef:
        """Made once per attempt, not at every look-up: a pass reads it several times."""
        ref = self._ref
        if ref is None or ref.attempt != attempt or ref.incarnation != incarnation:
            ref = self._ref = AttemptRef.trusted(
                run_id=self.run.run_id, node_id=self.id, attempt=attempt, incarnation=incarnation
            )
        return ref

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_NODE

    def view(self) -> NodeView:
        return NodeView(
            id=self.id,
            task=self.task,
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


class RunState:
    """One run. A one-node run waiting deep in the queue is *dormant* (``doze``): its
    ``Submit``, with its node, is kept as compact JSON and read back on first use
    (``submit``, ``NodeState.node``), so a million waiting runs do not hold a million
    pydantic trees (about 6 KB each; dormant, about 250 bytes). Its empty dicts and sets
    are made again when something is put in them."""

    __slots__ = (
        "_changed",
        "_frozen",
        "_infeasible",
        "_refs",
        "_submit",
        "_values",
        "error",
        "final_view",
        "finished_at",
        "in_flight",
        "infeasible_since",
        "name",
        "nodes",
        "progress",
        "remaining",
        "run_id",
        "status",
        "submitted_at",
        "touched",
    )  # fmt: skip

    def __init__(
        self,
        submit: Submit,
        submitted_at: float,
        status: RunStatus = "running",
        touched: set[str] | None = None,
    ) -> None:
        self._submit: Submit | None = submit
        self._frozen: bytes | None = None
        self.run_id: str = submit.run_id
        self.name: str = submit.name
        self.progress: bool = submit.progress
        self.submitted_at = submitted_at
        self.status: RunStatus = status
        self.nodes: dict[str, NodeState] = {}
        self._values: dict[str, JsonValue] | None = None
        self._refs: dict[str, PayloadRef] | None = None
        self.in_flight = 0
        self.remaining = 0
        self.finished_at: float | None = None
        self.error = ""
        self._infeasible: dict[str, str] | None = None
        self.infeasible_since: float | None = None
        self.final_view: RunView | None = None
        self._changed: set[str] | None = None
        self.touched: set[str] = set() if touched is None else touched
        """The scheduler's set of changed runs, shared by all its runs."""

    @property
    def submit(self) -> Submit:
        if self._submit is None:
            self.wake()
            assert self._submit is not None
        return self._submit

    @property
    def values(self) -> dict[str, JsonValue]:
        if self._values is None:
            self._values = {}
        return self._values

    @property
    def refs(self) -> dict[str, PayloadRef]:
        if self._refs is None:
            self._refs = {}
        return self._refs

    @property
    def infeasible(self) -> dict[str, str]:
        if self._infeasible is None:
            self._infeasible = {}
        return self._infeasible

    @property
    def changed(self) -> set[str]:
        """Nodes changed since the last update was sent."""
        if self._changed is None:
            self._changed = set()
        return self._changed

    def sent(self) -> None:
        """The changes were pushed (``views.take_update``): none left."""
        self._changed = None

    def queued_view(self) -> RunView | None:
        """A dormant run no attempt was made of yet, as its live record needs it: its id
        and time only (a restart makes its node ready again, ``recovery.rebuild``), built
        without validation, as a deep queue writes one for every run in it. None for any
        other run. (A copy of one made once: ``model_construct`` looks each default
        factory's signature up again, 30 us a view.)"""
        state = next(iter(self.nodes.values()))
        if self._submit is not None or state.status != "ready" or state.attempt or state.batch:
            return None
        return _QUEUED.model_copy(update={"run_id": self.run_id, "submitted_at": self.submitted_at})

    @property
    def as_submitted(self) -> bool:
        """A one-node run waiting, no attempt made of it yet: its submission alone (and
        its time) rebuilds it (``recovery.rebuild``), so a queued record keeps it."""
        if len(self.nodes) != 1:
            return False
        state = next(iter(self.nodes.values()))
        return state.status == "ready" and not state.attempt and not state.batch

    @property
    def dormant(self) -> bool:
        return self._submit is None

    def doze(self) -> None:
        """Keep the submission as JSON until it is needed again (a one-node run waiting
        behind many others: nothing reads its ``Submit`` until it comes first)."""
        if self._submit is None or len(self.nodes) != 1:
            return
        self._frozen = self._submit.model_dump_json(exclude_defaults=True).encode()
        self._submit = None
        for state in self.nodes.values():
            state._node = None
        self._values = self._values or None
        self._refs = self._refs or None
        self._infeasible = self._infeasible or None
        self._changed = self._changed or None

    def wake(self) -> None:
        """Read the submission back (the same values, as JSON keeps them exactly)."""
        assert self._frozen is not None
        submit = self._submit = Submit.model_validate_json(self._frozen)
        self._frozen = None
        for node in submit.dag.nodes:
            self.nodes[node.id]._node = node

    def stored_submit(self) -> Submit | bytes:
        """What the store keeps of the submission: the JSON of a dormant run as it is,
        without reading it back."""
        return self._submit if self._submit is not None else self.submit_json()

    def submit_json(self) -> bytes:
        if self._frozen is not None:
            return self._frozen
        return self.submit.model_dump_json(exclude_defaults=True).encode()

    @property
    def deadline(self) -> float | None:
        timeout = self.submit.options.timeout
        return None if timeout is None else self.submitted_at + timeout

    def view(self) -> RunView:
        """The run as clients see it; an ended run cannot change, so its view is built once
        (the final push and the final checkpoint both need it)."""
        if self.final_view is not None:
            return self.final_view
        view = self._dormant_view() if self._submit is None else self._view()
        if self.status != "running":
            self.final_view = view
        return view

    def _view(self) -> RunView:
        return RunView(
            run_id=self.run_id,
            name=self.name,
            status=self.status,
            submitted_at=self.submitted_at,
            finished_at=self.finished_at,
            nodes=tuple(n.view() for n in self.nodes.values()),
            outputs=self.values,
            output_refs=self.refs,
            error=self.error,
            edges=self.submit.dag.edges,
        )

    def _dormant_view(self) -> RunView:
        """A dormant run has one node and no edges: nothing needs reading back."""
        return RunView(
            run_id=self.run_id,
            name=self.name,
            status=self.status,
            submitted_at=self.submitted_at,
            finished_at=self.finished_at,
            nodes=tuple(n.view() for n in self.nodes.values()),
            outputs=self._values or {},
            output_refs=self._refs or {},
            error=self.error,
        )


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
    state: NodeState,
    devices: tuple[int, ...],
    lease: AttemptRef | None = None,
    after: NodeState | None = None,
) -> Assignment:
    """What the worker is sent for the node's current attempt: its inputs as values, or as
    references to stored payloads; chained ``after`` an attempt in flight, the inputs that
    attempt will return are named for the agent to put in (``Continuation``)."""
    node, run = state.node, state.run
    kwargs = dict(node.kwargs)
    arg_refs: dict[str, PayloadRef] = dict(node.arg_refs)
    coming = () if after is None else after.node.outputs
    takes: dict[str, str] = {}
    for param, names in node.inputs.items():
        if isinstance(names, str):
            if names in coming:
                kwargs[param] = None
                takes[param] = names
            elif names in run.refs:
                kwargs[param] = None
                arg_refs[param] = run.refs[names]
            else:
                kwargs[param] = run.values.get(names)
            continue
        values: list[JsonValue] = []
        for index, name in enumerate(names):
            values.append(run.values.get(name))
            if name in coming:
                takes[f"{param}.{index}"] = name
            elif name in run.refs:
                arg_refs[f"{param}.{index}"] = run.refs[name]
        kwargs[param] = values
    chained = None
    if after is not None:
        chained = Continuation(ref=after.ref, outputs=after.node.outputs, takes=takes)
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
        reply=run.submit.notify if len(run.nodes) == 1 and state.attempt == 1 else None,
        lease=lease,
        after=chained,
    )


def _shape(value: JsonValue) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return f"a {type(value).__name__}"
