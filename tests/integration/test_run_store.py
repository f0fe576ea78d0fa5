"""The run store on a real JetStream: a record nobody can read is set aside, never fatal."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client

import coordinator.store as store_module
from coordinator.store import RunStore
from shared.dag import Dag, Node
from shared.wire.runs import RunView, Submit
from shared.wire.subjects import Subjects

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


def deep_record(run_id: str, depth: int) -> bytes:
    """What a coordinator before the depth bound stored for a deep argument."""
    submit = Submit(run_id=run_id, dag=Dag(nodes=(Node(id="a", task="t", kwargs={"x": 0}),)))
    view = RunView(run_id=run_id)
    record = b'{"submit":' + submit.model_dump_json().encode() + b',"view":'
    record += view.model_dump_json().encode() + b"}"
    deep = b"[" * depth + b"1" + b"]" * depth
    return record.replace(b'{"x":0}', b'{"x":' + deep + b"}")


async def test_unreadable_live_records_are_set_aside_with_their_reason(nc: Client) -> None:
    store = await RunStore.open(nc.jetstream(), Subjects())
    good = Submit(run_id="good", dag=Dag(nodes=(Node(id="a", task="t"),)))
    await store.save(good, RunView(run_id="good"))
    kv = await nc.jetstream().key_value(Subjects().runs_bucket)
    await kv.put("live.deep", deep_record("deep", 200))
    await kv.put("live.junk", b"{not json")

    live = await store.live()

    assert [r.view.run_id for r in live] == ["good"]
    for run_id, raw in (("deep", deep_record("deep", 200)), ("junk", b"{not json")):
        view = await store.view(run_id)
        assert view is not None
        assert view.status == "failed"
        assert "could not read this run's stored record" in view.error
        assert (await kv.get(f"aside.{run_id}")).value == raw
    assert [r.view.run_id for r in await store.live()] == ["good"]  # a second start too
    assert {v.run_id for v in await store.recent(10)} == {"deep", "junk"}


def submit_of(run_id: str) -> Submit:
    return Submit(run_id=run_id, dag=Dag(nodes=(Node(id="a", task="t"),)))


async def test_every_restart_scan_finds_the_one_live_run_among_deleted_ones(nc: Client) -> None:
    """A scan that stops early leaves a run hanging for ever: with hundreds of finished
    runs (deleted live records) and tombstones written by hand, every one of 400 scans
    must find exactly the live run."""
    store = await RunStore.open(nc.jetstream(), Subjects())
    kv = await nc.jetstream().key_value(Subjects().runs_bucket)
    for n in range(220):
        run_id = f"old-{n}"
        await store.save(submit_of(run_id), RunView(run_id=run_id))
        await store.save(submit_of(run_id), RunView(run_id=run_id, status="succeeded"))
    await store.save(submit_of("alive"), RunView(run_id="alive"))
    for n in range(100):
        await kv.put(f"live.gone-{n}", b"x")
        await kv.delete(f"live.gone-{n}")

    found = [[r.view.run_id for r in await store.live()] for _ in range(400)]

    missed = [n for n, ids in enumerate(found) if ids != ["alive"]]
    assert missed == [], f"{len(missed)} of 400 scans did not find exactly the live run"


async def test_finished_runs_page_back_from_the_newest_without_gaps_or_repeats(
    nc: Client,
) -> None:
    store = await RunStore.open(nc.jetstream(), Subjects())
    kv = await nc.jetstream().key_value(Subjects().runs_bucket)
    ended = [f"r{n:04d}" for n in range(700)]
    for n, run_id in enumerate(ended):
        await store.save(submit_of(run_id), RunView(run_id=run_id))
        if n % 3 == 0:  # other keys between the final records
            await kv.put(f"live.other-{n}", b"x")
        await store.save(submit_of(run_id), RunView(run_id=run_id, status="failed"))
    await store.save(submit_of("r0000"), RunView(run_id="r0000", status="cancelled"))  # again

    pages = []
    views, cursor = await store.recent_page(100)
    pages.append([v.run_id for v in views])
    while cursor is not None:
        views, cursor = await store.recent_page(100, cursor)
        pages.append([v.run_id for v in views])

    newest = [*ended[1:], "r0000"]  # the order the final records were last written
    assert pages[0] == newest[-100:]
    assert [r for page in reversed(pages) for r in page] == newest
    assert await store.recent_page(5, 1) == ([], None)


async def test_a_restart_resumes_from_queued_records_only_runs_without_a_record_of_their_own(
    nc: Client,
) -> None:
    """A queued record goes only after each of its runs has a record of its own, so it may
    still name a run that is running (a live record) or ended (a final record): those come
    back as their own records say, not queued again, and not run twice."""
    store = await RunStore.open(nc.jetstream(), Subjects())
    ids = ["waiting", "running", "ended"]
    await store.save_queued(
        "r1", [(10.0 + n, submit_of(r).model_dump_json().encode()) for n, r in enumerate(ids)]
    )
    await store.save(submit_of("running"), RunView(run_id="running", submitted_at=11.0))
    await store.save(
        submit_of("ended"), RunView(run_id="ended", status="succeeded"), had_live=False
    )
    live = await store.live()
    queued = await store.queued({r.view.run_id for r in live})
    assert [r.view.run_id for r in live] == ["running"]
    assert [(r.submit, r.view.submitted_at, r.view.status) for r in queued.runs] == [
        (submit_of("waiting"), 10.0, "running")
    ]
    assert queued.records == {"r1": ["waiting"]}
    await store.drop_queued("r1")
    assert (await store.queued(set())).runs == []


async def test_an_unreadable_queued_run_is_set_aside_and_the_others_resume(nc: Client) -> None:
    store = await RunStore.open(nc.jetstream(), Subjects())
    kv = await nc.jetstream().key_value(Subjects().runs_bucket)
    good = submit_of("good").model_dump_json()
    await kv.put(
        "queued.r2",
        f'{{"runs":[{{"submitted_at":1.0,"submit":{good}}},'
        f'{{"submitted_at":1.0,"submit":{{"run_id":"bad","dag":7}}}}]}}'.encode(),
    )
    await kv.put("queued.junk", b"{not json")
    queued = await store.queued(set())
    assert [r.view.run_id for r in queued.runs] == ["good"]
    assert queued.records == {"r2": ["good"]}  # the junk is left where it is, not dropped
    view = await store.view("bad")
    assert view is not None
    assert view.status == "failed"
    assert "could not read this run's stored record" in (view.error or "")


async def test_a_restart_of_a_deep_queue_lists_final_records_instead_of_asking_each(
    nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``LOOKUP_MOST`` queued runs, ended ones are found among the final records
    written since the oldest queued record, read without values: the same answer."""
    store = await RunStore.open(nc.jetstream(), Subjects())
    await store.save(submit_of("before"), RunView(run_id="before", status="succeeded"), False)
    ids = [f"q{n}" for n in range(30)]
    await store.save_queued("r", [(1.0, submit_of(r).model_dump_json().encode()) for r in ids])
    for run_id in ids[:20]:
        await store.save(submit_of(run_id), RunView(run_id=run_id, status="succeeded"), False)
    asked = await store.queued(set())
    monkeypatch.setattr(store_module, "LOOKUP_MOST", 5)
    listed = await store.queued(set())
    assert [r.view.run_id for r in listed.runs] == [r.view.run_id for r in asked.runs] == ids[20:]
    assert listed.records == asked.records == {"r": ids[20:]}
