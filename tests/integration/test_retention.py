"""Retention by age, count and bytes: set on the streams and the runs bucket at start,
and finished runs trimmed oldest first without touching a live one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client

from coordinator.store import RunStore
from shared.dag import Dag, Node
from shared.jetstream import Limits, Retention, ensure_streams
from shared.wire.runs import RunView, Submit
from shared.wire.subjects import Subjects

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


def submit_of(run_id: str) -> Submit:
    return Submit(run_id=run_id, dag=Dag(nodes=(Node(id="a", task="t"),)))


async def finish(store: RunStore, run_ids: list[str]) -> None:
    await store.save_many([(submit_of(r), RunView(run_id=r), False) for r in run_ids])
    await store.save_many(
        [(submit_of(r), RunView(run_id=r, status="failed"), True) for r in run_ids]
    )


async def test_stream_limits_are_applied_at_creation_and_set_again_by_the_coordinator(
    nc: Client,
) -> None:
    js, subjects = nc.jetstream(), Subjects()
    tight = Retention(streams=Limits(max_age=3600.0, max_msgs=50, max_bytes=1 << 20))
    await ensure_streams(js, subjects, tight)
    name = subjects.submissions_stream
    config = (await js.stream_info(name)).config
    assert (config.max_age, config.max_msgs, config.max_bytes) == (3600.0, 50, 1 << 20)
    for n in range(80):
        await js.publish(subjects.submit, b"{}", headers={"Nats-Msg-Id": f"m{n}"})
    assert (await js.stream_info(name)).state.messages == 50

    await ensure_streams(js, subjects)  # an agent: leaves the coordinator's limits alone
    assert (await js.stream_info(name)).config.max_msgs == 50

    looser = Retention(streams=Limits(max_age=7200.0, max_msgs=-1, max_bytes=-1))
    await ensure_streams(js, subjects, looser)  # a coordinator restarted with new settings
    for stream in (subjects.submissions_stream, subjects.outcomes_stream):
        config = (await js.stream_info(stream)).config
        assert (config.max_age, config.max_msgs, config.max_bytes) == (7200.0, -1, -1)


async def test_finished_runs_past_the_count_limit_are_trimmed_oldest_first(nc: Client) -> None:
    js = nc.jetstream()
    store = await RunStore.open(js, Subjects())
    await store.save(submit_of("alive"), RunView(run_id="alive"))
    await finish(store, [f"r{n:04d}" for n in range(300)])

    limited = await RunStore.open(js, Subjects(), Limits(max_age=3600.0, max_msgs=100))

    views, cursor = await limited.recent_page(1000)
    assert [v.run_id for v in views] == [f"r{n:04d}" for n in range(200, 300)]
    assert cursor is None
    assert [r.view.run_id for r in await limited.live()] == ["alive"]
    assert (await js.stream_info("KV_FLEET_RUNS")).config.max_age == 3600.0
    assert await limited.finished(["r0000", "r0299"]) == {"r0299": views[-1]}


async def test_finished_runs_past_the_byte_limit_are_trimmed_while_writing(
    nc: Client,
) -> None:
    js = nc.jetstream()
    store = await RunStore.open(js, Subjects(), Limits(max_bytes=200_000))
    await store.save(submit_of("alive"), RunView(run_id="alive"))
    for lo in range(0, 3000, 500):
        await finish(store, [f"r{n:04d}" for n in range(lo, lo + 500)])
    await store.trim()

    assert (await js.stream_info("KV_FLEET_RUNS")).state.bytes <= 200_000
    views, _ = await store.recent_page(5)
    assert [v.run_id for v in views] == [f"r{n:04d}" for n in range(2995, 3000)]
    assert [r.view.run_id for r in await store.live()] == ["alive"]


async def test_final_records_a_queued_record_may_need_are_kept_past_the_count_limit(
    nc: Client,
) -> None:
    """A queued record stays until its last run has a record of its own, and a restart
    learns that its other runs ended from their final records: trimmed, those runs would
    run again. So only final records older than the oldest queued record are trimmed."""
    js = nc.jetstream()
    store = await RunStore.open(js, Subjects())
    await finish(store, [f"old{n:03d}" for n in range(100)])
    await store.save_queued(
        "q", [(1.0, submit_of(r).model_dump_json().encode()) for r in ("a", "b")]
    )
    await finish(store, ["a", *(f"new{n:03d}" for n in range(100))])

    limited = await RunStore.open(js, Subjects(), Limits(max_age=3600.0, max_msgs=50))

    assert await limited.finished(["old099"]) == {}  # older than the queued record: gone
    assert set(await limited.finished(["a", "new099"])) == {"a", "new099"}
    assert [r.view.run_id for r in (await limited.queued(set())).runs] == ["b"]
