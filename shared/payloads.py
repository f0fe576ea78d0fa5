"""Large values, stored write-once where no peer can replace or remove them.

A value too large for a message (arguments from a client, results from an agent) is
stored in the payload stream as chunks on ``<prefix>.payload.<writer>.<key>.<i>``, and
the message carries a ``PayloadRef`` instead. NATS's object store would hand every
writer the power to replace or delete any object (a new meta message on the object's
subject is enough, and no permission can tell one object's subject from another's);
this stream refuses that by construction:

- one message per subject, and a second one is refused (discard new per subject), so a
  stored chunk cannot be replaced; no rollups;
- deletes and purges are refused for everyone, the coordinator included: values leave
  only by age (the stream's ``max_age``);
- the writer is the NATS user (the token of its inbox prefix, ``shared/connection.py``),
  so ``deploy/nats/accounts.conf`` lets each user write only under its own name;
- a reference carries the value's SHA-256, checked on read.

The coordinator makes an existing stream so at start (``enforce``): anyone allowed to
create it might have created it without these settings first. A writer that finds it
unprotected refuses to write there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NotFoundError
from pydantic import JsonValue

from shared.connection import DEFAULT_INBOX
from shared.jetstream import DUPLICATE_WINDOW, MSG_ID, RETENTION
from shared.payload_cache import KeptPayloads
from shared.wire.codec import decode_value
from shared.wire.parts import (
    CHUNK_HEADROOM,
    MAX_CHUNK,
    MIN_CHUNK,
    PAYLOAD_CHUNK,
    PayloadRef,
)
from shared.wire.subjects import Subjects

_T = TypeVar("_T")
_IN_FLIGHT = 16
"""Chunks written or read at once for one value."""
ANONYMOUS = "anonymous"
"""The writer of a connection without a user name (token, NKey, creds, no login)."""


class PayloadError(RuntimeError):
    """A stored value cannot be written or read back as its reference says."""


def writer_of(nc: Client) -> str:
    """The NATS user a connection logs in as, as its inbox prefix names it
    (``_INBOX_<user>``; ``anonymous`` for plain ``_INBOX``)."""
    prefix = nc.new_inbox().rsplit(".", 1)[0]
    return prefix.removeprefix(DEFAULT_INBOX).removeprefix("_") or ANONYMOUS


def protections(config: api.StreamConfig, subjects: Subjects) -> api.StreamConfig:
    """``config`` with what makes stored values write-once (limits are left as they are)."""
    return dataclasses.replace(
        config,
        subjects=[subjects.all_payloads],
        max_msgs_per_subject=1,
        discard=api.DiscardPolicy.NEW,
        discard_new_per_subject=True,
        deny_delete=True,
        deny_purge=True,
        allow_rollup_hdrs=False,
        allow_direct=True,
    )


def is_protected(config: api.StreamConfig, subjects: Subjects) -> bool:
    return (
        list(config.subjects or ()) == [subjects.all_payloads]
        and config.max_msgs_per_subject == 1
        and config.discard == api.DiscardPolicy.NEW
        and bool(config.discard_new_per_subject)
        and bool(config.deny_delete)
        and bool(config.deny_purge)
        and bool(config.allow_direct)
        and not config.allow_rollup_hdrs
    )


async def ensure_payloads(
    js: JetStreamContext, subjects: Subjects, *, enforce: bool = False
) -> None:
    """Create the payload stream if missing. ``enforce`` (the coordinator) makes an existing
    one write-once; without it, an unprotected stream is refused with the fix."""
    name = subjects.payloads_stream
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        base = api.StreamConfig(
            name=name,
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            max_age=RETENTION,
            duplicate_window=DUPLICATE_WINDOW,
        )
        try:
            await js.add_stream(protections(base, subjects))
        except BadRequestError as exc:
            if "already in use" not in str(exc):
                raise
            return await ensure_payloads(js, subjects, enforce=enforce)
        return None
    if is_protected(info.config, subjects):
        return None
    if enforce:
        await js.update_stream(protections(info.config, subjects))
        return None
    raise PayloadError(
        f"stream {name} would let stored values be replaced or deleted; start the "
        "coordinator once (it makes the stream write-once), then try again"
    )


class PayloadStore:
    """Writes values under this connection's own user and reads anyone's by reference."""

    def __init__(self, nc: Client, subjects: Subjects, *, kept: KeptPayloads | None = None) -> None:
        """``kept``: where an agent keeps what it read (``shared/payload_cache.py``)."""
        self._kept = kept
        self._js = nc.jetstream()
        self._subjects = subjects
        self._writer = writer_of(nc)
        self._ready: asyncio.Future[None] | None = None
        self._chunk = chunk_size(nc.max_payload)

    async def _ensure(self) -> None:
        if self._ready is None or (self._ready.done() and self._ready.exception() is not None):
            self._ready = asyncio.ensure_future(ensure_payloads(self._js, self._subjects))
        await asyncio.shield(self._ready)

    async def save(self, data: bytes) -> PayloadRef:
        """Store ``data`` under a key never used before and return its reference."""
        await self._ensure()
        ref = PayloadRef(
            name=f"{self._writer}.{secrets.token_hex(16)}",
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            chunk_size=self._chunk,
        )
        stream = self._subjects.payloads_stream

        async def put(i: int) -> None:
            subject = self._subjects.payload_chunk(ref.name, i)
            chunk = data[i * ref.chunk_size : (i + 1) * ref.chunk_size]
            # The id makes a retry after a lost ack a duplicate, not a refused second write.
            await self._js.publish(subject, chunk, stream=stream, headers={MSG_ID: subject})

        await _bounded(put, range(ref.chunks))
        return ref

    async def read(self, ref: PayloadRef) -> bytes:
        """The stored bytes of ``ref``; PayloadError if gone or not what was stored."""
        if self._kept is not None:
            return await self._kept.read(ref, self._read)
        return await self._read(ref)

    async def _read(self, ref: PayloadRef) -> bytes:
        stream = self._subjects.payloads_stream

        async def get(i: int) -> bytes:
            subject = self._subjects.payload_chunk(ref.name, i)
            try:
                msg = await self._js.get_last_msg(stream, subject, direct=True)
            except (NotFoundError, NoRespondersError):  # no such message, or no stream
                raise PayloadError(
                    f"stored value {ref.name!r} is gone (chunk {i} missing: aged out of "
                    f"stream {stream}, or never stored)"
                ) from None
            return msg.data or b""

        data = b"".join(await _bounded(get, range(ref.chunks)))
        if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
            raise PayloadError(
                f"stored value {ref.name!r} has {len(data)} bytes that do not match its "
                f"reference ({ref.size} bytes, sha256 {ref.sha256[:12]}...)"
            )
        return data

    async def load(self, ref: PayloadRef) -> JsonValue:
        return decode_value(await self.read(ref))


def chunk_size(max_payload: int) -> int:
    """As large as the server takes in one message, less room for the headers: each chunk
    is a publish, its acknowledgement and a read, so a 1 MB value is one or two of them,
    not four. ``PAYLOAD_CHUNK`` where the server's limit is unknown (0)."""
    if max_payload <= 0:
        return PAYLOAD_CHUNK
    return max(MIN_CHUNK, min(MAX_CHUNK, max_payload - CHUNK_HEADROOM))


async def _bounded(call: Callable[[int], Awaitable[_T]], indices: range) -> list[_T]:
    """``call`` on each index, at most ``_IN_FLIGHT`` at a time, results in order."""
    gate = asyncio.Semaphore(_IN_FLIGHT)

    async def one(i: int) -> _T:
        async with gate:
            return await call(i)

    return list(await asyncio.gather(*(one(i) for i in indices)))
