"""Messages between clients and the coordinator: submissions, run views, updates, control.

A run's view is one document (``RunView``) used everywhere: the coordinator
keeps it in the ``FLEET_RUNS`` KV bucket, pushes changes of it to the client
(``RunUpdate``), answers ``fleet status`` with it. One shape, so a client that
reconnects or another process fetching by run id sees what the waiter saw.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, Self

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from shared.dag import Dag, RunOptions, check_inputs
from shared.resources import WorkerSpec
from shared.wire.codec import join_items
from shared.wire.parts import newer
from shared.wire.protocol import (
    Epoch,
    ErrorInfo,
    Part,
    PayloadRef,
    ProtocolError,
    Token,
    Versioned,
    decode_model,
)
from shared.wire.values import Value

NodeStatus = Literal[
    "pending", "ready", "placed", "running", "succeeded", "failed", "cancelled", "skipped"
]
RunStatus = Literal["running", "succeeded", "failed", "cancelled"]
TERMINAL_NODE: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "skipped"})
TERMINAL_RUN: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class Submit(Versioned):
    """A DAG with its inputs; ``run_id`` is chosen by the client so it can listen first."""

    type: Literal["submit"] = "submit"
    run_id: Token
    name: str = ""
    dag: Dag
    inputs: dict[str, Value] = Field(default_factory=dict)
    input_refs: dict[str, PayloadRef] = Field(default_factory=dict)
    options: RunOptions = RunOptions()
    submitted_at: Epoch = 0.0
    notify: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$", max_length=256)
    """Subject for this run's ``RunUpdate``s (a client's one inbox for all its runs);
    the run's own subject when unset."""
    progress: bool = True
    """Push node changes as they happen; when False only the run's end is pushed."""
    fresh: bool = False
    """The client drew ``run_id`` at random for this submission: it cannot have run
    before, so the coordinator skips the look-up of finished runs (a KV round trip) for
    it, except for a copy JetStream delivers again. A client that chose its id (an
    idempotency key) leaves it False, and gets a finished run's stored result."""
    members: tuple[Token, ...] = ()
    """A batch run's member runs, in the order of their items: set by the coordinator when
    it forms a batch (stored, so a restarted one maps its outcome to the same members);
    a client's submission naming any is refused."""

    def wire_json(self) -> bytes:
        """Without the fields left at their defaults, most of every node's: a kiq's
        submission was 4x the bytes, and a 1,000-node DAG took the coordinator 2.6x as
        long to read (22 against 8 ms). ``version`` and ``type`` stay, first."""
        body = self.model_dump_json(exclude_defaults=True, exclude={"version", "type"})
        return f'{{"version":{self.version},"type":"{self.type}",{body[1:]}'.encode()

    @model_validator(mode="after")
    def _inputs_given(self) -> Self:
        both = sorted(set(self.inputs) & set(self.input_refs))
        if both:
            raise ValueError(f"inputs {both} given both inline and by reference")
        check_inputs(self.dag, set(self.inputs) | set(self.input_refs))
        return self


class SubmitBatch(Versioned):
    """Many ``Submit``s in one JetStream message: a burst of ``kiq`` costs a few round
    trips, not one each. Senders join already encoded submissions (``join``); receivers
    read it with ``parse_submits``, which refuses a bad item alone."""

    type: Literal["submit_batch"] = "submit_batch"
    items: tuple[Submit, ...] = Field(min_length=1)

    @classmethod
    def join(cls, encoded: Sequence[bytes]) -> bytes:
        """Encoded ``Submit``s as one encoded ``SubmitBatch``, without decoding them again."""
        if not encoded:
            raise ValueError("nothing to send: a SubmitBatch holds at least one Submit")
        return join_items("submit_batch", cls.VERSION, encoded)


def batch_of_submits(items: Sequence[bytes]) -> bytes:
    """Kept for callers of the old name: ``SubmitBatch.join``."""
    return SubmitBatch.join(items)


Submission = Annotated[Submit | SubmitBatch, Field(discriminator="type")]
_SUBMISSION: TypeAdapter[Submit | SubmitBatch] = TypeAdapter(Submission)


@dataclass(frozen=True, slots=True)
class Refused:
    """A submission that failed validation, with where to tell its submitter."""

    run_id: str
    notify: str | None
    error: str


def parse_submits(data: bytes) -> list[Submit | Refused]:
    """The submissions in one message (a ``Submit`` or a ``SubmitBatch``).

    Each item is validated on its own, so one bad run in a batch is refused alone:
    it comes back as ``Refused``. A message that is not a submission
    at all raises ProtocolError.
    """
    try:
        found = _SUBMISSION.validate_json(data)
    except ValidationError:
        return [_client_made(_one(item)) for item in _items(data)]
    items = list(found.items) if isinstance(found, SubmitBatch) else [found]
    return [_client_made(item) for item in items]


def _client_made(item: Submit | Refused) -> Submit | Refused:
    """Only the coordinator forms batch runs: one a client sent could end others' runs."""
    if isinstance(item, Submit) and item.members:
        why = "'members' is set by the coordinator when it forms a batch, not by a client"
        return Refused(item.run_id, item.notify, why)
    return item


def _items(data: bytes) -> list[object]:
    """The JSON items of a message that did not validate as a whole."""
    try:
        obj = json.loads(data)
    except (ValueError, TypeError, RecursionError) as exc:
        raise ProtocolError("json", f"not a JSON message: {exc}") from None
    if not isinstance(obj, dict) or obj.get("type") != "submit_batch":
        return [obj]
    version = obj.get("version", 1)
    if isinstance(version, int) and version > SubmitBatch.VERSION:
        raise ProtocolError("version", f"'submit_batch': {newer(version, SubmitBatch.VERSION)}")
    items = obj.get("items")
    if not isinstance(items, list) or not items:
        raise ProtocolError("invalid", "a submit_batch needs a non-empty 'items' list")
    return items


def _one(item: object) -> Submit | Refused:
    try:
        return Submit.model_validate(item)
    except ValidationError:
        pass
    fields = item if isinstance(item, dict) else {}
    run_id, notify = fields.get("run_id"), fields.get("notify")
    try:
        return decode_model(json.dumps(item).encode(), Submit)
    except ProtocolError as exc:
        return Refused(
            run_id if isinstance(run_id, str) else "",
            notify if isinstance(notify, str) else None,
            str(exc),
        )


class NodeView(Part):
    id: Token
    task: str
    status: NodeStatus = "pending"
    attempt: int = Field(default=0, ge=0)
    worker: str | None = None
    gpu_devices: tuple[int, ...] = ()
    started_at: Epoch | None = None
    finished_at: Epoch | None = None
    error: ErrorInfo | None = None
    reason: str = ""
    """Why the node waits or failed in scheduling terms (busy, infeasible, skipped)."""
    system_retries: int = Field(default=0, ge=0)
    batch: Token | None = None
    """The batch run this member runs in (``batch=True`` tasks), once it is formed."""

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class RunView(Part):
    run_id: Token
    name: str = ""
    status: RunStatus = "running"
    submitted_at: Epoch = 0.0
    finished_at: Epoch | None = None
    nodes: tuple[NodeView, ...] = ()
    outputs: dict[str, Value] = Field(default_factory=dict)
    output_refs: dict[str, PayloadRef] = Field(default_factory=dict)
    error: str = ""
    edges: tuple[tuple[Token, Token], ...] = ()
    """The DAG's dependencies as (upstream, downstream) node ids, so that whoever reads the
    view (the dashboard, a stored final record) can draw the DAG."""

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_RUN

    def node(self, node_id: str) -> NodeView:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(f"run {self.run_id!r} has no node {node_id!r}")


class RunUpdate(Versioned):
    """Pushed on the run's subject whenever nodes change; ``run`` is set once it ended."""

    type: Literal["run_update"] = "run_update"
    run_id: Token
    status: RunStatus
    nodes: tuple[NodeView, ...] = ()
    run: RunView | None = None


class SubmitReply(Versioned):
    type: Literal["submit_reply"] = "submit_reply"
    run_id: str
    accepted: bool
    error: str = ""


class WorkerView(Part):
    spec: WorkerSpec
    reserved: dict[str, float] = Field(default_factory=dict)
    free: dict[str, float] = Field(default_factory=dict)
    gpu_free: dict[int, float] = Field(default_factory=dict)
    healthy: bool = True
    draining: bool = False
    last_seen: Epoch = 0.0
    running: int = 0
    cpu_percent: float = 0.0
    available_ram_mb: int = 0


class CtlRequest(Versioned):
    type: Literal["ctl"] = "ctl"
    run_id: str | None = None
    limit: int = Field(default=100, ge=1)
    before: int | None = Field(default=None, ge=1)
    """For ``runs``: a page of finished runs older than this cursor (a reply's
    ``next_before``); running runs come only on the first page."""
    max_parallel: int | None = Field(default=None, ge=1)
    """For ``limit``: the new global cap on attempts in flight; None removes it."""


class CoordinatorView(Part):
    """One ``fleet coordinator`` process: the leader, or a standby ready to take over."""

    name: str
    role: Literal["leader", "standby"]
    term: int = Field(default=0, ge=0)


class CtlReply(Versioned):
    type: Literal["ctl_reply"] = "ctl_reply"
    ok: bool = True
    error: str = ""
    workers: tuple[WorkerView, ...] = ()
    coordinators: tuple[CoordinatorView, ...] = ()
    """For ``workers``: the leader that answers and the standbys it has heard of."""
    runs: tuple[RunView, ...] = ()
    next_before: int | None = None
    """For ``runs``: the cursor of the next, older page of finished runs; None at the end."""


class RunPage(list[RunView]):
    """A page of ``runs``, oldest first, with the cursor of the next, older page of
    finished runs (``next_before``; None when there is none). A list, as before paging."""

    def __init__(self, runs: Sequence[RunView] = (), next_before: int | None = None) -> None:
        super().__init__(runs)
        self.next_before = next_before
