"""``NatsPipelineStorage``: pipeline tracking records in a NATS KV bucket, with a TTL.

The documents keep tracking records in Redis, ``RedisPipelineStorage(redis,
ttl_seconds=86400)`` (Performance guide §4.3, §9: "enable Redis storage for tracking,
set a TTL"). A fleet already runs NATS with JetStream, so the records go to a KV bucket
(``FLEET_PIPELINES`` by default) whose ``max_age`` is the TTL: the server drops a record
``ttl_seconds`` after its last change, as ``MemoryTrackingStorage`` does in memory, and
every process connected to the fleet reads the same records::

    storage = NatsPipelineStorage("nats://nats1:4222", ttl_seconds=86400)
    tracking = PipelineTrackingManager(storage)
    pipeline = Pipeline(broker).with_tracking(tracking)

One bucket has one TTL: opening it with another ``ttl_seconds`` sets the bucket's
``max_age`` to it, for every record in it. Records are JSON (``PipelineStatus``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Self

import structlog
from nats.aio.client import Client
from nats.js import api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue
from pydantic import TypeAdapter, ValidationError

from shared.connection import NatsSettings, connect, inbox_prefix
from shared.wire.subjects import Subjects, token
from taskiq_fleet.flow.tracking import DEFAULT_TTL, PipelineStatus

log = structlog.get_logger(__name__)

_RECORD = TypeAdapter(PipelineStatus)


def _key(pipeline_id: str) -> str:
    try:
        return token(pipeline_id)
    except ValueError as exc:
        raise ValueError(f"pipeline ids are KV keys here: {exc}") from None


class NatsPipelineStorage:
    """A ``TrackingStorage`` on NATS KV: ``PipelineTrackingManager(NatsPipelineStorage(...))``.

    ``nats`` is a connected ``nats.aio.client.Client`` (left open by ``close()``), or
    server URLs / ``NatsSettings`` to connect to on first use (closed by ``close()``).
    ``ttl_seconds=None`` keeps records until deleted."""

    def __init__(
        self,
        nats: Client | NatsSettings | str,
        *,
        ttl_seconds: float | None = DEFAULT_TTL,
        prefix: str = "fleet",
        bucket: str | None = None,
    ) -> None:
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise ValueError(f"a tracking TTL must be > 0 seconds, got {ttl_seconds}")
        self.ttl_seconds = ttl_seconds
        self.bucket = bucket or Subjects(prefix).pipelines_bucket
        self._target = nats
        self._nc: Client | None = nats if isinstance(nats, Client) else None
        self._kv: KeyValue | None = None
        self._opening = asyncio.Lock()

    async def _bucket(self) -> KeyValue:
        async with self._opening:  # concurrent first uses open it once
            if self._kv is None:
                self._kv = await self._open()
            return self._kv

    async def _open(self) -> KeyValue:
        if self._nc is None:
            target = self._target
            assert not isinstance(target, Client)
            settings = (
                target
                if isinstance(target, NatsSettings)
                else NatsSettings(servers=tuple(target.split(",")))
            )
            self._nc = await connect(
                settings, name="fleet-pipelines", inbox_prefix=inbox_prefix(settings)
            )
        js = self._nc.jetstream()
        try:
            kv = await js.key_value(self.bucket)
        except BucketNotFoundError:
            config = api.KeyValueConfig(bucket=self.bucket, ttl=self.ttl_seconds, history=1)
            return await js.create_key_value(config)
        stream = (await js.stream_info(f"KV_{self.bucket}")).config
        max_age = self.ttl_seconds or 0.0
        if abs((stream.max_age or 0.0) - max_age) > 1e-6:
            window = stream.duplicate_window or 0.0  # may not exceed max_age
            if max_age and window > max_age:
                window = max_age
            changed = dataclasses.replace(stream, max_age=max_age, duplicate_window=window)
            await js.update_stream(changed)
        return kv

    async def get(self, pipeline_id: str) -> PipelineStatus | None:
        kv = await self._bucket()
        try:
            entry = await kv.get(_key(pipeline_id))
        except KeyNotFoundError:  # never written, deleted, or expired
            return None
        try:
            return _RECORD.validate_json(entry.value or b"")
        except ValidationError as exc:
            log.warning(
                "unreadable pipeline record ignored",
                pipeline=pipeline_id,
                bucket=self.bucket,
                error=str(exc).splitlines()[0],
            )
            return None

    async def put(self, record: PipelineStatus) -> None:
        kv = await self._bucket()
        await kv.put(_key(record.pipeline_id), _RECORD.dump_json(record))

    async def delete(self, pipeline_id: str) -> bool:
        live = await self.get(pipeline_id) is not None
        if live:
            kv = await self._bucket()
            await kv.purge(_key(pipeline_id))
        return live

    async def ids(self) -> list[str]:
        kv = await self._bucket()
        try:
            return sorted(await kv.keys())
        except NoKeysError:
            return []

    async def close(self) -> None:
        """Close the connection this storage made; one it was given stays open."""
        if self._nc is not None and not isinstance(self._target, Client):
            await self._nc.close()
            self._nc = None
            self._kv = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
