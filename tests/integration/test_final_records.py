"""Final records in atomic batches (``coordinator/atomic.py``), on a real JetStream: one
acknowledgement for a checkpoint's worth of ended runs, and nothing lost when the server
refuses a batch."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from coordinator.atomic import allow_atomic
from coordinator.store import RunStore
from shared.dag import Dag, Node
from shared.wire.runs import RunView, Submit
from shared.wire.subjects import Subjects

pytestmark = pytest.mark.integration
DONE = "$KV.FLEET_RUNS.done.>"


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


def ended(run_id: str, **extra: object) -> tuple[Submit, RunView, bool]:
    submit = Submit(run_id=run_id, dag=Dag(nodes=(Node(id="a", task="t"),)))
    return submit, RunView(run_id=run_id, status="succeeded", **extra), False


async def tapped(nc: Client) -> list[Msg]:
    """Every message published on the final records' subjects, as the server passes it on."""
    seen: list[Msg] = []

    async def keep(msg: Msg) -> None:
        seen.append(msg)

    await nc.subscribe(DONE, cb=keep)
    await nc.flush()
    return seen


async def test_a_checkpoints_final_records_are_stored_together_with_one_answer(
    nc: Client,
) -> None:
    """Written as KV puts, each final record was a publish waiting for its own answer;
    now they go as one atomic batch and only its last message asks for one."""
    store = await RunStore.open(nc.jetstream(), Subjects())
    seen = await tapped(nc)
    ids = [f"r{n}" for n in range(5)]
    assert await store.save_many([ended(r) for r in ids]) == {}
    await nc.flush()
    assert [bool(m.reply) for m in seen] == [False] * 4 + [True]
    assert len({(m.headers or {}).get("Nats-Batch-Id") for m in seen}) == 1
    assert sorted(await store.finished(ids)) == ids


async def test_a_record_too_large_fails_alone_and_the_rest_are_stored_one_by_one(
    nc: Client,
) -> None:
    store = await RunStore.open(nc.jetstream(), Subjects())
    large = ended("large", outputs={"x": "y" * (nc.max_payload + 1)})
    failed = await store.save_many([ended("a"), large, ended("b")])
    assert list(failed) == ["large"]
    assert sorted(await store.finished(["a", "b", "large"])) == ["a", "b"]


async def test_a_bucket_that_stopped_taking_batches_loses_no_record(nc: Client) -> None:
    """As a server that does not know batches: the batch is refused (or stored message by
    message), and the records are written again one at a time."""
    js = nc.jetstream()
    store = await RunStore.open(js, Subjects())
    assert await store.save_many([ended("a"), ended("b")]) == {}  # batches on
    config = (await js.stream_info("KV_FLEET_RUNS")).config
    await js.update_stream(dataclasses.replace(config, allow_atomic=False))
    ids = [f"late{n}" for n in range(4)]
    assert await store.save_many([ended(r) for r in ids]) == {}
    assert sorted(await store.finished(ids)) == ids


async def test_a_bucket_not_reachable_when_first_asked_is_asked_again(nats_url: str) -> None:
    """NATS away at the first write must not turn batches off for the coordinator's life:
    that answer is 'could not ask' (None), not 'no' (False)."""
    away = await nats.connect(nats_url)
    await away.close()
    assert await allow_atomic(away.jetstream(), "KV_FLEET_RUNS") is None
    async with await nats.connect(nats_url) as nc:
        await RunStore.open(nc.jetstream(), Subjects())
        assert await allow_atomic(nc.jetstream(), "KV_FLEET_RUNS") is True
