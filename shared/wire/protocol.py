"""The messages agents, the coordinator and clients exchange, as versioned JSON.

JSON rather than pickle, so a message can be read with ``nats sub``, cannot run
code on the receiver, and can come from a process of another version. Every
message names its ``type`` and ``version``; a receiver meeting a newer version
says so instead of misreading fields. ``decode`` turns all bad input into one
``ProtocolError``, so a subscriber needs one ``except`` to log, drop, go on.

Models are frozen and refuse unknown fields: a typo is an error at the sender,
not a field the receiver silently ignores. Ids that go into subjects (worker,
run, node) are checked as subject tokens, so a message that decodes can always
be answered on its subjects.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Literal, Self, TypeVar, get_args

from pydantic import (
    Field,
    JsonValue,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from shared.resources import NonNegInt, ResourceRequest, WorkerSpec
from shared.wire import codec
from shared.wire.codec import join_items, with_field
from shared.wire.codec import size_chunks as size_chunks
from shared.wire.parts import (
    AttemptRef as AttemptRef,
)
from shared.wire.parts import (
    Epoch as Epoch,
)
from shared.wire.parts import (
    ErrorInfo as ErrorInfo,
)
from shared.wire.parts import (
    ErrorKind as ErrorKind,
)
from shared.wire.parts import (
    Part as Part,
)
from shared.wire.parts import (
    PayloadRef as PayloadRef,
)
from shared.wire.parts import (
    ProtocolError as ProtocolError,
)
from shared.wire.parts import (
    Seconds as Seconds,
)
from shared.wire.parts import (
    Token as Token,
)
from shared.wire.parts import (
    Versioned as Versioned,
)
from shared.wire.parts import (
    newer as newer,
)
from shared.wire.subjects import token
from shared.wire.values import Value

RejectCode = Literal["capacity", "labels", "unknown_task", "draining", "malformed"]
TERM_HEADER = "Fleet-Term"
"""Header of every assignment and cancel message: the sending leader's term. An agent
drops what comes from an older term than it has seen (a deposed leader's late word)."""
Status = Literal["succeeded", "failed", "timed_out", "cancelled"]
Digest = Annotated[str, Field(min_length=1, max_length=64)]


def task_digest(tasks: Iterable[str]) -> str:
    """A fingerprint of a set of task names: each heartbeat proves with it the set the
    coordinator places by, without repeating a list that may hold thousands of names."""
    return hashlib.sha256("\n".join(sorted(set(tasks))).encode()).hexdigest()[:16]


class Reserved(Part):
    """The agent's own accounting, reconciled with the pool's; ``gpus``: device -> share."""

    cpu: float = Field(default=0.0, ge=0)
    ram_mb: NonNegInt = 0
    gpus: dict[NonNegInt, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    resources: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)


class Register(Versioned):
    """Sent on start and after every reconnect; ``running`` lets a new coordinator adopt work."""

    type: Literal["register"] = "register"
    spec: WorkerSpec
    agent_version: str = Field(min_length=1)
    pid: int = Field(gt=0)
    started_at: Epoch
    heartbeat_interval: Seconds
    tasks: tuple[str, ...] = ()
    running: tuple[AttemptRef, ...] = ()

    @model_validator(mode="after")
    def _named(self) -> Self:
        token(self.spec.name)
        return self

    @property
    def worker(self) -> str:
        return self.spec.name


class Heartbeat(Versioned):
    """Self-sufficient, so a restarted coordinator rebuilds the pool from heartbeats alone.

    A new ``started_at`` means the agent restarted and lost every attempt it
    does not list in ``running``.
    """

    type: Literal["heartbeat"] = "heartbeat"
    worker: Token
    started_at: Epoch
    seq: NonNegInt
    interval: Seconds
    capacity: WorkerSpec
    reserved: Reserved = Reserved()
    cpu_percent: float = Field(ge=0)
    available_ram_mb: NonNegInt
    running: tuple[AttemptRef, ...] = ()
    queued: tuple[AttemptRef, ...] = ()
    """Attempts received under a worker lease, waiting for those ahead of them to end."""
    draining: bool = False
    tasks_digest: Digest | None = None
    """``task_digest`` of the agent's task names; None from agents older than it."""

    @model_validator(mode="after")
    def _same_worker(self) -> Self:
        if self.capacity.name != self.worker:
            raise ValueError(f"capacity names {self.capacity.name!r}, sender is {self.worker!r}")
        return self


class Reregister(Versioned):
    """The coordinator asks an agent for its Register again: it does not know the agent's
    task set (it missed the Register), or the heartbeat proves another one."""

    type: Literal["reregister"] = "reregister"
    reason: str = ""


class Pace(Versioned):
    """How often the coordinator asks agents to beat at most: a fleet's heartbeats stay
    within what one coordinator reads (``max_heartbeats``, as Nomad bounds its servers'
    heartbeats per second), whatever the number of agents. An agent beats every
    ``interval`` seconds or its own interval, whichever is longer."""

    type: Literal["pace"] = "pace"
    interval: Annotated[float, Field(ge=0, le=3600)]


class Deregister(Versioned):
    type: Literal["deregister"] = "deregister"
    worker: Token
    reason: str = ""


class Continuation(Part):
    """An attempt sent before the one it waits for has ended (a chain: a node whose only
    upstream runs on the same worker, under the same lease). The agent runs it right after
    that attempt, with the values that attempt returned put where ``takes`` says, instead
    of the coordinator sending it once the upstream's outcome was stored and applied. If
    that attempt did not succeed there, the agent ends this one cancelled, unrun."""

    ref: AttemptRef
    """The upstream attempt; it runs before this one under the same lease."""
    outputs: tuple[Token, ...] = ()
    """The upstream node's declared outputs: one takes its whole value, several a list."""
    takes: dict[str, Token] = Field(default_factory=dict)
    """Argument key (a kwarg, or ``kwarg.index`` of a list kwarg, as ``arg_refs``) -> the
    name of the upstream output that goes there."""


class Assignment(Versioned):
    """One attempt to run, with the reservation it was placed under for the agent to check.

    ``labels`` keep JSON types because taskiq middlewares read e.g. ``retry_on_error``
    as a bool. ``arg_refs`` maps a position (``"0"``) or keyword to a value the
    agent fetches from the payloads store; the inline value is a placeholder.
    """

    type: Literal["assign"] = "assign"
    ref: AttemptRef
    task_name: str = Field(min_length=1)
    args: tuple[Value, ...] = ()
    kwargs: dict[str, Value] = Field(default_factory=dict)
    arg_refs: dict[str, PayloadRef] = Field(default_factory=dict)
    labels: dict[str, Value] = Field(default_factory=dict)
    request: ResourceRequest
    gpu_devices: tuple[NonNegInt, ...] = ()
    timeout: Seconds | None = None
    reply: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$", max_length=256)
    """The submitter's inbox when this node's success ends its run (a one-node run, first
    attempt: a retried node's story is the coordinator's to tell): the agent answers it
    directly (``Subjects.direct``) as well as storing the outcome."""
    lease: AttemptRef | None = None
    """The worker lease this attempt runs under (``coordinator/scheduling/leases.py``): the
    agent runs the attempts of one lease one after another under one reservation, made
    for the first it receives and released when none is left."""
    after: Continuation | None = None
    """Set for a chained attempt (``Continuation``); it comes under the lease of the one
    it follows."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        devices, gpus = self.gpu_devices, self.request.gpus
        wanted = 0 if gpus == 0 else max(1, int(gpus))
        if len(set(devices)) != len(devices) or len(devices) != wanted:
            raise ValueError(f"gpus={gpus:g} needs {wanted} distinct device(s), got {devices}")
        if self.after is not None and self.lease is None:
            raise ValueError("a chained attempt ('after') runs under its upstream's lease")
        keys = [("arg_refs", key) for key in self.arg_refs]
        keys += [("after.takes", key) for key in (self.after.takes if self.after else ())]
        for field, key in keys:
            if not self._names_argument(key):
                raise ValueError(
                    f"{field} names {key!r}, which is neither an index, a kwarg, "
                    "nor 'kwarg.index' of a list kwarg"
                )
        return self

    def _names_argument(self, key: str) -> bool:
        if key.isdecimal():
            return int(key) < len(self.args)
        if key in self.kwargs:
            return True
        name, _, index = key.rpartition(".")
        value = self.kwargs.get(name)
        return index.isdecimal() and isinstance(value, list) and int(index) < len(value)

    def resolved(self, values: Mapping[str, JsonValue]) -> Assignment:
        """This assignment with ``values`` (fetched for its ``arg_refs`` keys) put where
        those keys point, and no refs left; the keys read as ``_names_argument`` checked."""
        args, kwargs = list(self.args), dict(self.kwargs)
        for key, value in values.items():
            name, _, index = key.rpartition(".")
            if key.isdecimal():
                args[int(key)] = value
            elif key not in kwargs and isinstance(items := kwargs.get(name), list):
                kwargs[name] = [*items[: int(index)], value, *items[int(index) + 1 :]]
            else:
                kwargs[key] = value
        return self.model_copy(update={"args": tuple(args), "kwargs": kwargs, "arg_refs": {}})


class Accept(Versioned):
    type: Literal["accept"] = "accept"
    ref: AttemptRef
    worker: Token


class Reject(Versioned):
    """The agent's refusal; the coordinator releases the reservation and places the node again."""

    type: Literal["reject"] = "reject"
    ref: AttemptRef
    worker: Token
    code: RejectCode
    reason: str = ""


class Cancel(Versioned):
    type: Literal["cancel"] = "cancel"
    ref: AttemptRef
    reason: str = ""


class Outcome(Versioned):
    """How one attempt ended: only a success carries a value, and a failure must say why."""

    type: Literal["outcome"] = "outcome"
    ref: AttemptRef
    worker: Token
    status: Status
    return_value: Value = None
    return_ref: PayloadRef | None = None
    error: ErrorInfo | None = None
    started_at: Epoch
    finished_at: Epoch
    answered: bool = False
    """The agent told the submitter itself (``Assignment.reply``): the coordinator does not
    push the run's end to it again."""
    _value_json: bytes | None = PrivateAttr(default=None)
    """``return_value`` already encoded (``codec.encode_value``), sent as it is."""

    def with_value_json(self, data: bytes) -> Outcome:
        """This outcome, carrying ``data``: its ``return_value`` encoded once, by the caller."""
        copy = self.model_copy()
        copy._value_json = data
        return copy

    def value_json(self) -> bytes | None:
        """The inline value as JSON bytes: the ones given, else encoded now."""
        if self.return_value is None:
            return None
        return self._value_json or codec.encode_value(self.return_value)

    def wire_json(self) -> bytes:
        if self._value_json is None or self.return_value is None:
            return super().wire_json()
        head = self.model_dump_json(exclude={"return_value"}).encode()
        return with_field(head, "return_value", self._value_json)

    def __eq__(self, other: object) -> bool:
        """As the message: how its value was encoded makes no difference."""
        if not isinstance(other, Outcome):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = Versioned.__hash__

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.finished_at < self.started_at:
            raise ValueError(f"finished_at {self.finished_at} is before started_at")
        has_value = self.return_value is not None or self.return_ref is not None
        if self.status == "succeeded":
            if self.error is not None:
                raise ValueError("a succeeded outcome cannot carry an error")
            if self.return_value is not None and self.return_ref is not None:
                raise ValueError("give return_value or return_ref, not both")
        elif has_value:
            raise ValueError(f"a {self.status} outcome cannot carry a return value")
        elif self.status == "failed" and self.error is None:
            raise ValueError("a failed outcome must carry an error")
        return self

    @property
    def duration(self) -> float:
        return self.finished_at - self.started_at


ItemModel = (
    Register
    | Heartbeat
    | Reregister
    | Pace
    | Deregister
    | Assignment
    | Accept
    | Reject
    | Cancel
    | Outcome
)
Item = Annotated[ItemModel, Field(discriminator="type")]


class Batch(Versioned):
    """Many messages in one NATS message, to cut per-message cost on the hot path.

    Meant for subjects that address one worker (assign, cancel, ack); no nesting.
    """

    type: Literal["batch"] = "batch"
    items: tuple[Item, ...] = Field(min_length=1)


MessageModel = ItemModel | Batch
Message = Annotated[MessageModel, Field(discriminator="type")]
M = TypeVar("M", bound=Versioned)

_ADAPTER: TypeAdapter[MessageModel] = TypeAdapter(Message)
_MODELS: dict[str, type[Versioned]] = {
    m.model_fields["type"].default: m for m in get_args(MessageModel)
}
_MAX_ERRORS = 5


def encode(msg: Versioned) -> bytes:
    return msg.wire_json()


def encode_each(items: Sequence[ItemModel]) -> bytes:
    """One message as itself, several as one Batch: what ``decode_each`` reads back."""
    return join_encoded([encode(item) for item in items])


def join_encoded(encoded: Sequence[bytes]) -> bytes:
    """Messages already encoded (no batches), as ``encode_each`` would send them; a Batch
    is assembled around the bytes rather than decoding and encoding the items again."""
    if not encoded:
        raise ValueError("nothing to send: a Batch holds at least one message")
    return encoded[0] if len(encoded) == 1 else join_items("batch", Batch.VERSION, encoded)


def decode(data: bytes) -> MessageModel:
    """Any message; bad input of every kind raises ProtocolError and nothing else."""
    _object_shaped(data)
    try:
        return _ADAPTER.validate_json(data)
    except ValidationError as exc:
        raise _diagnose(data, exc) from None


def decode_as(data: bytes, model: type[M]) -> M:
    """For a subject that carries one type: any other type is a ProtocolError too."""
    msg = decode(data)
    if not isinstance(msg, model):
        raise ProtocolError("type", f"expected a {_name(model)!r} message, got {msg.type!r}")
    return msg


def decode_each(data: bytes, model: type[M]) -> tuple[M, ...]:
    """One ``model`` message or a Batch of them, as a tuple either way."""
    msg = decode(data)
    found: list[M] = []
    for item in msg.items if isinstance(msg, Batch) else (msg,):
        if not isinstance(item, model):
            raise ProtocolError("type", f"expected {_name(model)!r} messages, got {item.type!r}")
        found.append(item)
    return tuple(found)


def _name(model: type[Versioned]) -> str:
    return str(model.model_fields["type"].default)


def decode_model(data: bytes, model: type[M]) -> M:
    """A message outside the agent protocol's union (runs, control); same errors as decode."""
    _object_shaped(data)
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise _diagnose(data, exc, {_name(model): model}) from None


_SHAPES = {b"[": "list", b'"': "str", b"t": "bool", b"f": "bool", b"n": "null"}
_SHAPES |= {c.encode(): "number" for c in "-0123456789"}
_FIRST = re.compile(rb"[ \t\n\r]*(.?)", re.DOTALL)
_WORDS = {b"t": (b"true",), b"f": (b"false",), b"n": (b"null",)}
"""A letter names a JSON shape only when it starts that literal ("not json" is no null)."""


def _object_shaped(data: bytes) -> None:
    """Every message is a JSON object: anything else is refused on its first byte, before
    any parsing (a junk array of 2,000 numbers cost ~330 us to parse and diagnose)."""
    first = _FIRST.match(data)
    start = b"" if first is None else first.group(1)
    if start == b"{":
        return
    if not start:
        raise ProtocolError("json", "not a JSON message: empty")
    shape = _SHAPES.get(start)
    if shape is None or (start in _WORDS and data.strip() not in _WORDS[start]):
        raise ProtocolError("json", f"not a JSON message: it starts with {start!r}")
    raise ProtocolError("json", f"a message is a JSON object, got {shape}")


def _diagnose(
    data: bytes, exc: ValidationError, models: dict[str, type[Versioned]] = _MODELS
) -> ProtocolError:
    """Name the first thing wrong, from the outside in: JSON, type, version, fields.

    Bytes pydantic could not parse are not parsed again: a flood of junk costs one parse
    a message (a deep one, json's recursion to its limit, took ~100 us more)."""
    errors = exc.errors(include_url=False, include_input=False)
    if errors[0]["type"] == "json_invalid":
        return ProtocolError("json", f"not a JSON message: {errors[0]['msg']}")
    try:
        obj = json.loads(data)
    except (ValueError, TypeError, RecursionError) as err:
        return ProtocolError("json", f"not a JSON message: {err}")
    if not isinstance(obj, dict):
        return ProtocolError("json", f"a message is a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in models:
        got = "no 'type' field" if kind is None else f"unknown message type {kind!r}"
        return ProtocolError("type", f"{got}; expected one of {sorted(models)}")
    version, spoken = obj.get("version", 1), models[kind].VERSION
    if isinstance(version, int) and not isinstance(version, bool) and version > spoken:
        return ProtocolError("version", f"{kind!r}: {newer(version, spoken)}")
    parts = [f"{'.'.join(map(str, e['loc'][1:])) or '(message)'}: {e['msg']}" for e in errors]
    more = f"; and {len(parts) - _MAX_ERRORS} more" if len(parts) > _MAX_ERRORS else ""
    return ProtocolError(
        "invalid", f"invalid {kind!r} message: {'; '.join(parts[:_MAX_ERRORS])}{more}"
    )
