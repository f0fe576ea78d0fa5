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

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, ClassVar, Literal, Self, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from shared.resources import NonNegInt, ResourceRequest, WorkerSpec
from shared.wire.subjects import token

Token = Annotated[str, AfterValidator(token)]
Seconds = Annotated[float, Field(gt=0)]
Epoch = Annotated[float, Field(ge=0)]
RejectCode = Literal["capacity", "labels", "unknown_task", "draining", "malformed"]
Status = Literal["succeeded", "failed", "timed_out", "cancelled"]
ErrorKind = Literal["json", "type", "version", "invalid"]


class ProtocolError(ValueError):
    """Bytes this process cannot act on; ``kind`` tells a newer peer from garbage in logs."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


class Part(BaseModel):
    # allow_inf_nan=False: JSON has no NaN, and pydantic would send it as null.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Versioned(Part):
    VERSION: ClassVar[int] = 1
    version: int = Field(default=1, ge=1, strict=True)

    @model_validator(mode="after")
    def _spoken_version(self) -> Self:
        if self.version > self.VERSION:
            raise ValueError(_newer(self.version, self.VERSION))
        return self


def _newer(version: int, spoken: int) -> str:
    return (
        f"message version {version} is newer than this process speaks (up to {spoken}); "
        "upgrade taskiq-fleet on this host"
    )


class AttemptRef(Part):
    """One try of one node; a message about a superseded attempt is ignored."""

    run_id: Token
    node_id: Token
    attempt: int = Field(ge=1)

    @property
    def key(self) -> str:
        """Stable text id, e.g. for reservations and JetStream de-duplication."""
        return f"{self.run_id}.{self.node_id}.{self.attempt}"


class PayloadRef(Part):
    """A value too large to travel inline, kept in the payloads object store."""

    name: str = Field(min_length=1)
    size: NonNegInt


class ErrorInfo(Part):
    type: str = Field(min_length=1)
    message: str = ""
    traceback: str = ""

    def clipped(self, limit: int) -> ErrorInfo:
        """At most about ``limit`` characters of message and traceback together, keeping
        the head and the tail of each, so a task raising with a huge message still gets an
        outcome small enough for one NATS message."""
        if len(self.message) + len(self.traceback) <= limit:
            return self
        return self.model_copy(
            update={
                "message": _clip(self.message, limit // 2),
                "traceback": _clip(self.traceback, limit // 2),
            }
        )


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters clipped ...]\n{text[-half:]}"


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
    draining: bool = False

    @model_validator(mode="after")
    def _same_worker(self) -> Self:
        if self.capacity.name != self.worker:
            raise ValueError(f"capacity names {self.capacity.name!r}, sender is {self.worker!r}")
        return self


class Deregister(Versioned):
    type: Literal["deregister"] = "deregister"
    worker: Token
    reason: str = ""


class Assignment(Versioned):
    """One attempt to run, with the reservation it was placed under for the agent to check.

    ``labels`` keep JSON types because taskiq middlewares read e.g. ``retry_on_error``
    as a bool. ``arg_refs`` maps a position (``"0"``) or keyword to a value the
    agent fetches from the payloads store; the inline value is a placeholder.
    """

    type: Literal["assign"] = "assign"
    ref: AttemptRef
    task_name: str = Field(min_length=1)
    args: tuple[JsonValue, ...] = ()
    kwargs: dict[str, JsonValue] = Field(default_factory=dict)
    arg_refs: dict[str, PayloadRef] = Field(default_factory=dict)
    labels: dict[str, JsonValue] = Field(default_factory=dict)
    request: ResourceRequest
    gpu_devices: tuple[NonNegInt, ...] = ()
    timeout: Seconds | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        devices, gpus = self.gpu_devices, self.request.gpus
        wanted = 0 if gpus == 0 else max(1, int(gpus))
        if len(set(devices)) != len(devices) or len(devices) != wanted:
            raise ValueError(f"gpus={gpus:g} needs {wanted} distinct device(s), got {devices}")
        for key in self.arg_refs:
            if not self._names_argument(key):
                raise ValueError(
                    f"arg_refs names {key!r}, which is neither an index, a kwarg, "
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
    return_value: JsonValue = None
    return_ref: PayloadRef | None = None
    error: ErrorInfo | None = None
    started_at: Epoch
    finished_at: Epoch

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


ItemModel = Register | Heartbeat | Deregister | Assignment | Accept | Reject | Cancel | Outcome
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
T = TypeVar("T")

_ADAPTER: TypeAdapter[MessageModel] = TypeAdapter(Message)
_MODELS: dict[str, type[Versioned]] = {
    m.model_fields["type"].default: m for m in get_args(MessageModel)
}
_MAX_ERRORS = 5


def encode(msg: Versioned) -> bytes:
    return msg.model_dump_json().encode()


def encode_each(items: Sequence[ItemModel]) -> bytes:
    """One message as itself, several as one Batch: what ``decode_each`` reads back."""
    return join_encoded([encode(item) for item in items])


def join_encoded(encoded: Sequence[bytes]) -> bytes:
    """Messages already encoded (no batches), as ``encode_each`` would send them; a Batch
    is assembled around the bytes rather than decoding and encoding the items again."""
    if not encoded:
        raise ValueError("nothing to send: a Batch holds at least one message")
    if len(encoded) == 1:
        return encoded[0]
    head = b'{"type":"batch","version":%d,"items":[' % Batch.VERSION
    return head + b",".join(encoded) + b"]}"


def size_chunks(items: Sequence[T], size: Callable[[T], int], limit: int) -> list[list[T]]:
    """Consecutive groups of ``items`` whose sizes add up to at most ``limit`` (an item
    larger than that goes alone): batches that stay under NATS' payload limit."""
    chunks: list[list[T]] = [[]]
    total = 0
    for item in items:
        n = size(item)
        if chunks[-1] and total + n > limit:
            chunks.append([])
            total = 0
        chunks[-1].append(item)
        total += n
    return chunks if chunks[0] else []


def decode(data: bytes) -> MessageModel:
    """Any message; bad input of every kind raises ProtocolError and nothing else."""
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
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise _diagnose(data, exc, {_name(model): model}) from None


def _diagnose(
    data: bytes, exc: ValidationError, models: dict[str, type[Versioned]] = _MODELS
) -> ProtocolError:
    """Name the first thing wrong, from the outside in: JSON, type, version, fields."""
    try:
        obj = json.loads(data)
    except (ValueError, TypeError) as err:
        return ProtocolError("json", f"not a JSON message: {err}")
    if not isinstance(obj, dict):
        return ProtocolError("json", f"a message is a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in models:
        got = "no 'type' field" if kind is None else f"unknown message type {kind!r}"
        return ProtocolError("type", f"{got}; expected one of {sorted(models)}")
    version, spoken = obj.get("version", 1), models[kind].VERSION
    if isinstance(version, int) and not isinstance(version, bool) and version > spoken:
        return ProtocolError("version", f"{kind!r}: {_newer(version, spoken)}")
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(map(str, e['loc'][1:])) or '(message)'}: {e['msg']}" for e in errors]
    more = f"; and {len(parts) - _MAX_ERRORS} more" if len(parts) > _MAX_ERRORS else ""
    return ProtocolError(
        "invalid", f"invalid {kind!r} message: {'; '.join(parts[:_MAX_ERRORS])}{more}"
    )
