"""The JetStream streams, created the same way by every process (the payload stream,
which is configured apart, is in ``shared/payloads.py``).

Agents and the coordinator both call ``ensure_streams`` at start: an agent that
finishes work before any coordinator has ever run must still find a stream to
keep its outcomes in. Creation is idempotent and never changes an existing
stream, so an operator's own settings (replicas, limits) survive restarts.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NotFoundError

from shared.wire.codec import encode_value as encode_value  # the one value encoder
from shared.wire.subjects import Subjects

T = TypeVar("T")

DUPLICATE_WINDOW = 120.0
"""Seconds within which a re-published outcome (same attempt) is stored once."""

RETENTION = 7 * 24 * 3600.0
INLINE_LIMIT = 1 << 20
"""Values whose JSON is larger than this travel through the payload stream."""

MSG_ID = "Nats-Msg-Id"


@dataclass(frozen=True, slots=True)
class Limits:
    """How much a stream (or the runs bucket) keeps: the oldest goes first past any of
    them. ``max_age`` in seconds; ``0`` (age) or ``-1`` (count, bytes) is no limit."""

    max_age: float = RETENTION
    max_msgs: int = -1
    max_bytes: int = -1


@dataclass(frozen=True, slots=True)
class Retention:
    """The coordinator's settings: ``streams`` for submissions and outcomes, ``runs`` for
    the finished runs in the runs bucket (live runs are never trimmed by count or bytes)."""

    streams: Limits = Limits()
    runs: Limits = Limits()


async def publish_stored(
    js: JetStreamContext,
    subject: str,
    data: bytes,
    *,
    headers: dict[str, str] | None = None,
    timeout: float,
) -> api.PubAck:
    """JetStream's ``publish``, its acknowledgement awaited directly (``publish_async``):
    nats-py's ``publish`` waits for it through ``asyncio.wait_for``, one more turn of the
    event loop for every kiq and every message of outcomes. Keep ``js`` for the connection:
    a context subscribes for its acknowledgements at its first publish. A timeout cancels
    the wait, which frees its place among the pending."""
    async with asyncio.timeout(timeout):
        acked = await js.publish_async(subject, data, headers=headers)
        return await acked


async def send_all(chunks: Sequence[T], send: Callable[[T], Awaitable[object]]) -> None:
    """``send`` every chunk at once; a lone chunk (the common case) is sent in place, as a
    task of its own would cost its message two more turns of the event loop."""
    if len(chunks) == 1:
        await send(chunks[0])
    else:
        await asyncio.gather(*(send(chunk) for chunk in chunks))


async def ensure_streams(
    js: JetStreamContext,
    subjects: Subjects,
    retention: Retention | None = None,
    attempts: int = 5,
) -> None:
    """Create the fleet's streams if missing. Several processes may race to create them
    (agents starting together); in a cluster one of those requests can go unanswered,
    so a timeout is retried and "already exists" counts as success. With ``retention``
    (the coordinator) an existing stream's limits are set to it; without (agents) an
    existing stream is left as it is."""
    for name, captured in subjects.streams().items():
        for attempt in range(1, attempts + 1):
            try:
                await _ensure_stream(js, name, captured, retention)
                break
            except TimeoutError:
                if attempt == attempts:
                    raise
                await asyncio.sleep(0.2 * attempt)


async def _ensure_stream(
    js: JetStreamContext, name: str, captured: tuple[str, ...], retention: Retention | None
) -> None:
    limits = Limits() if retention is None else retention.streams
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        pass
    else:
        if retention is not None:
            await update_limits(js, info.config, limits)
        return
    try:
        await js.add_stream(
            api.StreamConfig(
                name=name,
                subjects=list(captured),
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                max_age=limits.max_age,
                max_msgs=limits.max_msgs,
                max_bytes=limits.max_bytes,
                duplicate_window=DUPLICATE_WINDOW,
            )
        )
    except BadRequestError as exc:
        if "already in use" not in str(exc):
            raise


async def update_limits(js: JetStreamContext, config: api.StreamConfig, limits: Limits) -> bool:
    """Set a stream's age, count and byte limits to ``limits``; True if they changed."""
    have = (config.max_age or 0.0, config.max_msgs or -1, config.max_bytes or -1)
    wanted = (limits.max_age, limits.max_msgs, limits.max_bytes)
    if all(abs(h - w) < 1e-6 for h, w in zip(have, wanted, strict=True)):
        return False
    changed = dataclasses.replace(
        config, max_age=limits.max_age, max_msgs=limits.max_msgs, max_bytes=limits.max_bytes
    )
    await js.update_stream(changed)
    return True
