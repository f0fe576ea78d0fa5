"""``NatsPipelineStorage`` on a real nats-server: the documents' ``RedisPipelineStorage(redis,
ttl_seconds=...)`` (Performance guide §4.3) on the fleet's NATS, TTL included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from taskiq import InMemoryBroker

from shared.wire.subjects import Subjects
from taskiq_fleet import NatsPipelineStorage, Pipeline, PipelineTrackingManager
from taskiq_fleet.flow.runner import runner_for
from taskiq_fleet.flow.tracking import PipelineStatus

pytestmark = pytest.mark.integration

BUCKET = Subjects().pipelines_bucket
broker = InMemoryBroker()


@broker.task
def inc(x: int) -> int:
    return x + 1


@broker.task
def fail(x: int) -> int:
    raise ValueError(f"no {x}")


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()
    await runner_for(broker).close()


async def max_age(nc: Client) -> float:
    return (await nc.jetstream().stream_info(f"KV_{BUCKET}")).config.max_age or 0.0


async def test_records_are_shared_through_the_bucket(nc: Client, nats_url: str) -> None:
    tracking = PipelineTrackingManager(NatsPipelineStorage(nc, ttl_seconds=3600))
    pipeline = Pipeline(broker).with_tracking(tracking).call_next(inc).call_next(inc)
    task = await pipeline.kiq(1)
    assert (await task.wait_result(timeout=30)).return_value == 3
    failing = Pipeline(broker).with_tracking(tracking).call_next(inc).call_next(fail)
    failed = await failing.kiq(1)
    assert (await failed.wait_result(timeout=30)).is_err

    # another process: its own connection, made from the URL by the storage itself
    async with NatsPipelineStorage(nats_url, ttl_seconds=3600) as elsewhere:
        reader = PipelineTrackingManager(elsewhere)
        status = await reader.get_status(task.task_id)
        assert status is not None
        assert status.status == "COMPLETED"
        assert [(s.name, s.status) for s in status.steps] == [
            ("0:inc", "COMPLETED"),
            ("1:inc", "COMPLETED"),
        ]
        assert status.started_at is not None
        assert status.completed_at is not None
        broken = await reader.get_status(failed.task_id)
        assert broken is not None
        assert broken.status == "FAILED"
        assert "no 2" in str(broken.steps[1].error)
        assert sorted(await reader.list_pipelines()) == sorted([task.task_id, failed.task_id])
        assert await reader.delete_pipeline(failed.task_id)
        assert not await reader.delete_pipeline(failed.task_id)
    assert await tracking.get_status(failed.task_id) is None
    assert await tracking.list_pipelines() == [task.task_id]


async def test_the_ttl_is_the_buckets_max_age_and_records_expire(nc: Client) -> None:
    storage = NatsPipelineStorage(nc, ttl_seconds=1)
    await storage.put(PipelineStatus("short-lived"))
    assert await max_age(nc) == 1.0
    assert await storage.get("short-lived") is not None
    async with asyncio.timeout(30):
        # max_age expiry notifies no watcher: there is no event to await, only reads
        while await storage.get("short-lived") is not None:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert await storage.ids() == []

    longer = NatsPipelineStorage(nc, ttl_seconds=86400)  # the documents' one day
    assert await longer.ids() == []
    assert await max_age(nc) == 86400.0
    forever = NatsPipelineStorage(nc, ttl_seconds=None)
    await forever.put(PipelineStatus("kept"))
    assert await max_age(nc) == 0.0
    assert await longer.ids() == ["kept"]


async def test_bad_input_is_refused_in_one_line(nc: Client) -> None:
    with pytest.raises(ValueError, match="a tracking TTL must be > 0 seconds, got 0"):
        NatsPipelineStorage(nc, ttl_seconds=0)
    storage = NatsPipelineStorage(nc)
    with pytest.raises(ValueError, match="pipeline ids are KV keys here: name 'no spaces allowed'"):
        await storage.get("no spaces allowed")
    kv = await nc.jetstream().key_value(BUCKET)
    await kv.put("junk", b"{not a record")
    assert await storage.get("junk") is None  # logged and ignored, never a crash
