"""The JetStream streams and the payload store, created the same way by every process.

Agents and the coordinator both call ``ensure_streams`` at start: an agent that
finishes work before any coordinator has ever run must still find a stream to
keep its outcomes in. Creation is idempotent and never changes an existing
stream, so an operator's own settings (replicas, limits) survive restarts.
"""

from __future__ import annotations

import json

from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.object_store import ObjectStore
from pydantic import JsonValue

from shared.protocol import PayloadRef
from shared.subjects import Subjects

DUPLICATE_WINDOW = 120.0
"""Seconds within which a re-published outcome (same attempt) is stored once."""

RETENTION = 7 * 24 * 3600.0
INLINE_LIMIT = 1 << 20
"""Values whose JSON is larger than this travel through the object store."""

MSG_ID = "Nats-Msg-Id"


async def ensure_streams(js: JetStreamContext, subjects: Subjects) -> None:
    for name, captured in subjects.streams().items():
        try:
            await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(
                api.StreamConfig(
                    name=name,
                    subjects=list(captured),
                    storage=api.StorageType.FILE,
                    retention=api.RetentionPolicy.LIMITS,
                    max_age=RETENTION,
                    duplicate_window=DUPLICATE_WINDOW,
                )
            )


async def payload_store(js: JetStreamContext, subjects: Subjects) -> ObjectStore:
    try:
        return await js.object_store(subjects.payloads_bucket)
    except BucketNotFoundError:
        return await js.create_object_store(
            subjects.payloads_bucket, config=api.ObjectStoreConfig(ttl=RETENTION)
        )


def encode_value(value: JsonValue) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


async def save_value(store: ObjectStore, name: str, data: bytes) -> PayloadRef:
    await store.put(name, data)
    return PayloadRef(name=name, size=len(data))


async def load_value(store: ObjectStore, ref: PayloadRef) -> JsonValue:
    result = await store.get(ref.name)
    data = result.data or b""
    if len(data) != ref.size:
        raise ValueError(f"payload {ref.name!r} has {len(data)} bytes, expected {ref.size}")
    value: JsonValue = json.loads(data)
    return value
