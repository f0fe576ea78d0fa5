"""What every wire message is made of: the base models (``Part``, ``Versioned``), the
error a receiver raises (``ProtocolError``), and the small parts several messages share.

``protocol`` re-exports all of it; this module exists to keep each under ~400 lines.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, Self, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from shared.resources import NonNegInt
from shared.wire.subjects import token

Token = Annotated[str, AfterValidator(token)]
Seconds = Annotated[float, Field(gt=0)]
Epoch = Annotated[float, Field(ge=0)]
ErrorKind = Literal["json", "type", "version", "invalid"]


class ProtocolError(ValueError):
    """Bytes this process cannot act on; ``kind`` tells a newer peer from garbage in logs."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


class Part(BaseModel):
    # allow_inf_nan=False: JSON has no NaN, and pydantic would send it as null.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @classmethod
    def trusted(cls, **values: Any) -> Self:
        """Built from values known to be valid, without validation, as ``model_construct``
        builds it, but with the defaults looked up once per class: pydantic 2.14's
        ``model_construct`` inspects every default factory's signature on each call
        (20 us of a ``kiq``'s 35 us in the client)."""
        fields = {
            name: make() if make is not None else default
            for name, (default, make) in _defaults(cls).items()
            if name not in values
        }
        fields.update(values)
        return cast(Self, cls.model_construct(_fields_set=set(values), **fields))


_DEFAULTS: dict[type[BaseModel], dict[str, tuple[Any, Callable[[], Any] | None]]] = {}


def _defaults(cls: type[BaseModel]) -> dict[str, tuple[Any, Callable[[], Any] | None]]:
    """Each optional field's default, or a maker of it: a factory, or a copy of a
    mutable default (``model_construct`` copies those too)."""
    found = _DEFAULTS.get(cls)
    if found is None:
        found = _DEFAULTS[cls] = {}
        for name, info in cls.model_fields.items():
            if info.default_factory is not None:
                factory = info.default_factory
                if info.default_factory_takes_validated_data:
                    raise TypeError(f"{cls.__name__}.{name}: its factory needs the other fields")
                found[name] = (None, factory)  # type: ignore[assignment]
            elif not info.is_required():
                default = info.default
                mutable = isinstance(default, dict | list | set)
                found[name] = (default, functools.partial(copy.copy, default) if mutable else None)
    return found


class Versioned(Part):
    VERSION: ClassVar[int] = 1
    version: int = Field(default=1, ge=1, strict=True)

    def wire_json(self) -> bytes:
        """This message as sent (``encode``)."""
        return self.model_dump_json().encode()

    @model_validator(mode="after")
    def _spoken_version(self) -> Self:
        if self.version > self.VERSION:
            raise ValueError(newer(self.version, self.VERSION))
        return self


def newer(version: int, spoken: int) -> str:
    return (
        f"message version {version} is newer than this process speaks (up to {spoken}); "
        "upgrade taskiq-fleet on this host"
    )


class AttemptRef(Part):
    """One try of one node; a message about a superseded attempt is ignored.

    ``incarnation`` names the coordinator lifetime that made the attempt (a random token
    each coordinator start draws): a coordinator restarted before it stored a dispatch
    numbers its attempts again from what it knows, and the token keeps a second
    execution under the same number a different attempt. Empty in messages from before
    it existed, and from schedulers given none (tests)."""

    run_id: Token
    node_id: Token
    attempt: int = Field(ge=1)
    incarnation: str = Field(default="", max_length=32, pattern=r"^[A-Za-z0-9_-]*$")

    @property
    def key(self) -> str:
        """Stable text id, e.g. for reservations and JetStream de-duplication."""
        return f"{self.run_id}.{self.node_id}.{self.attempt}"


PAYLOAD_CHUNK = 256 * 1024
"""Bytes per stored chunk of a large value; under NATS's default 1 MiB message limit."""
MIN_CHUNK = 1024
MAX_CHUNK = 8 << 20
CHUNK_HEADROOM = 64 * 1024
"""What a chunk leaves of the server's ``max_payload`` for the message's headers."""
MAX_PAYLOAD_CHUNKS = 16_384
"""Chunks of one stored value at most: 4 GiB at ``PAYLOAD_CHUNK``."""


class PayloadRef(Part):
    """A value too large to travel inline, kept in the payload stream (``shared/payloads.py``).

    ``name`` is ``<writer>.<key>``: the writer's NATS user, which the server lets write only
    there, and a random key. Two tokens and nothing else, so a reference from a peer can
    only name chunk subjects, never a wildcard that would read someone else's value. The
    reader checks ``size`` and ``sha256``."""

    name: str = Field(max_length=2 * 128 + 1, pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
    size: NonNegInt
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    chunk_size: int = Field(default=PAYLOAD_CHUNK, ge=MIN_CHUNK, le=MAX_CHUNK)

    @property
    def chunks(self) -> int:
        return max(1, -(-self.size // self.chunk_size))

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        # A reader fetches every chunk: a forged size must not make it ask for millions.
        if self.chunks > MAX_PAYLOAD_CHUNKS:
            raise ValueError(
                f"a stored value of {self.size} bytes in chunks of {self.chunk_size} is "
                f"{self.chunks} chunks, more than {MAX_PAYLOAD_CHUNKS}"
            )
        return self


class ErrorInfo(Part):
    """A failure as the process waiting for it reads it. ``type`` is for people;
    ``module`` and ``qualname`` name the exception's class so that a client which has it
    can raise an instance of it (``taskiq_fleet/remote_errors.py``); both are empty for
    the coordinator's own failures (``Rejected``, ``WorkerLost``, ...) and in messages from
    before they existed."""

    type: str = Field(min_length=1)
    message: str = ""
    traceback: str = ""
    module: str = ""
    qualname: str = ""

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
