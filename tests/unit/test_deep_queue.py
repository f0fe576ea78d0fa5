"""A deep queue in the scheduler and its checkpointer: what a waiting run costs, that a
dormant run (``RunState.doze``) is placed and viewed exactly as before it slept, and that
runs waiting as submitted are written together, in one queued record, which goes when the
last of them has a record of its own."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

import pytest

import coordinator.scheduling.queue as queue_module
from benchmarks import scale_passes
from coordinator.checkpoint import QUEUED_BYTES, WRITE_CHUNK, Checkpointer
from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.run_records import (
    QueuedRun,
    StoredRun,
    live_record,
    queued_record,
    read_live,
    read_queued,
)
from coordinator.scheduling.machine import Scheduler
from coordinator.scheduling.views import take_update
from coordinator.turns import LIGHT_WRITES, TURN_EVERY, WRITE_EVERY, WRITE_REST, Turns
from shared.resources import WorkerSpec
from shared.wire.protocol import Register
from shared.wire.runs import RunView, Submit, parse_submits

TASK = "noop"


def kiqs(n: int) -> list[Submit]:
    """``n`` submissions as ``FleetBroker.kiq`` sends them, decoded as the coordinator does."""
    found = [s for data in scale_passes.messages(n) for s in parse_submits(data)]
    assert all(isinstance(s, Submit) for s in found)
    return found  # type: ignore[return-value]


def waiting() -> Scheduler:
    """A scheduler just started with one worker of 3 cpus: nothing is placed before the
    warm-up after a start is over (``Scheduler.start``), so whatever is submitted waits."""
    sched = Scheduler(ResourceAwareWorkerPool())
    sched.start(0.0)
    register(sched)
    return sched


def register(sched: Scheduler) -> None:
    spec = WorkerSpec(name="w1", cpu=3, ram_mb=8192)
    msg = Register(
        spec=spec,
        agent_version="test",
        pid=1,
        started_at=1.0,
        heartbeat_interval=1000.0,
        tasks=(TASK,),
    )
    sched.register(msg, 1.0)


@pytest.fixture
def shallow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every queued run dozes, not only those behind ``DEEP`` others of ``AWAKE`` in all."""
    monkeypatch.setattr(queue_module, "DEEP", 0, raising=False)
    monkeypatch.setattr(queue_module, "AWAKE", 0)


@pytest.mark.usefixtures("shallow")
def test_a_queued_run_costs_less_than_two_kilobytes() -> None:
    """Decoded and queued, as the coordinator does with each submission it is sent."""
    encoded = list(scale_passes.messages(3000))
    sched = waiting()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for data in encoded:
            for submit in parse_submits(data):
                assert isinstance(submit, Submit)
                sched.submit(submit, 1.0)
        sched.take()
        gc.collect()
        per_run = (tracemalloc.get_traced_memory()[0] - before) / 3000
    finally:
        tracemalloc.stop()
    assert len(sched.queued()) == 3000
    assert per_run < 2000, f"{per_run:.0f} bytes per queued run"


def placed(sched: Scheduler) -> list[dict[str, Any]]:
    sched.tick(6.0)
    out = sched.take()
    return [a.model_dump() for a in out.assign["w1"]]


def test_a_dormant_run_is_placed_as_if_it_never_slept(monkeypatch: pytest.MonkeyPatch) -> None:
    submits = kiqs(5)
    awake = waiting()
    for submit in submits:
        awake.submit(submit, 1.0)
    monkeypatch.setattr(queue_module, "DEEP", 0, raising=False)
    monkeypatch.setattr(queue_module, "AWAKE", 0)
    sleepy = waiting()
    for submit in submits:
        sleepy.submit(submit, 1.0)
    assert all(run.dormant for run in sleepy.runs.values())
    assert not any(run.dormant for run in awake.runs.values())
    assert placed(sleepy) == placed(awake)
    assert [r.dormant for r in sleepy.runs.values()] == [False] * 4 + [True]  # 4th: busy


def test_runs_doze_only_past_the_awake_bound_of_the_whole_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dozing costs CPU (a burst of a few thousand kiqs does not need it); past ``AWAKE``
    queued nodes it saves memory, and a node placed no longer counts."""
    monkeypatch.setattr(queue_module, "DEEP", 0, raising=False)
    monkeypatch.setattr(queue_module, "AWAKE", 5)
    submits = kiqs(20)
    sched = waiting()
    runs = [sched.submit(submit, 1.0) for submit in submits[:6]]
    assert [run is not None and run.dormant for run in runs] == [False] * 5 + [True]
    count = len(placed(sched))
    assert count >= 2
    more = [sched.submit(submit, 7.0) for submit in submits[6 : 6 + count - 1]]
    assert [run is not None and run.dormant for run in more] == [False] * (count - 1)


@pytest.mark.usefixtures("shallow")
def test_views_and_records_of_a_dormant_run_read_nothing_back() -> None:
    submit = kiqs(1)[0]
    sched = waiting()
    run = sched.submit(submit, 1.0)
    assert run is not None
    assert run.dormant
    view = sched.view(run.run_id)
    record = run.stored_submit()
    assert run.dormant  # neither woke it
    assert isinstance(record, bytes)
    assert Submit.model_validate_json(record) == submit
    assert run.submit == submit  # woken on use
    assert not run.dormant
    assert sched.view(run.run_id) == view


@pytest.mark.usefixtures("shallow")
def test_the_update_pushed_for_a_dormant_run_reads_nothing_back() -> None:
    """Every run touched in a pass is looked at for its push (``take_update``), a deep
    queue's dormant ones too."""
    sched = waiting()
    run = sched.submit(kiqs(1)[0], 1.0)
    assert run is not None
    assert run.dormant
    take_update(sched, run.run_id)
    assert run.dormant


@pytest.mark.usefixtures("shallow")
def test_a_dormant_run_s_live_record_reads_back_as_any_other() -> None:
    submit = kiqs(1)[0]
    sched = waiting()
    run = sched.submit(submit, 1.0)
    assert run is not None
    view = sched.view(run.run_id)
    record = live_record(run.stored_submit(), view)
    assert run.dormant
    assert read_live(f"live.{run.run_id}", record) == StoredRun(submit=submit, view=view)


class _Store:
    """Refuses the runs in ``refuse``; keeps what it was given for the others."""

    def __init__(self) -> None:
        self.refuse: set[str] = set()
        self.saved: list[tuple[object, RunView]] = []
        self.queued: dict[str, bytes] = {}
        """Queued records kept, by id."""
        self.dropped: list[str] = []
        self.turns = Turns(WRITE_EVERY, rest=WRITE_REST)

    async def save_queued(self, record_id: str, runs: list[tuple[float, bytes]]) -> None:
        if any(Submit.model_validate_json(raw).run_id in self.refuse for _, raw in runs):
            raise OSError("the store is away")
        self.queued[record_id] = queued_record(runs)

    async def drop_queued(self, record_id: str) -> None:
        del self.queued[record_id]
        self.dropped.append(record_id)

    def queued_runs(self) -> list[QueuedRun]:
        reads = [read_queued(raw) for raw in self.queued.values()]
        return [run for read in reads if read is not None for run in read.runs]

    async def save_many(self, items: list[tuple[object, RunView, bool]]) -> dict[str, Exception]:
        failed: dict[str, Exception] = {}
        for submit, view, _ in items:
            if view.run_id in self.refuse:
                failed[view.run_id] = OSError("the store is away")
            else:
                self.saved.append((submit, view))
        return failed


class _Msg:
    def __init__(self) -> None:
        self.data = b"the submission"
        self.acked = False
        self.progressed = asyncio.Event()

    async def ack(self) -> None:
        self.acked = True

    async def in_progress(self) -> None:
        self.progressed.set()


@pytest.mark.usefixtures("shallow")
async def test_a_queued_run_is_written_as_it_sleeps_and_its_message_kept_alive() -> None:
    """A dormant run's record is its submission's JSON (not read back) and its time, in a
    queued record, from which a restart queues it again; its message keeps only the run's
    id, and while the write fails JetStream is told every ``progress_every`` that it is
    still being worked on, so it is not delivered again."""
    sched = waiting()
    submit = kiqs(1)[0]
    run = sched.submit(submit, 1.0)
    assert run is not None
    now = [0.0]
    store, msg = _Store(), _Msg()
    store.refuse.add(submit.run_id)
    points = Checkpointer(
        store,  # type: ignore[arg-type]
        sched,
        progress_every=0.01,
        clock=lambda: now[0],
    )
    points.mark(sched.take().changed, [], [(msg, {submit.run_id})])  # type: ignore[list-item]
    await points.flush()
    assert (store.queued, msg.acked, msg.data) == ({}, False, b"")  # young: not yet
    now[0] = 2.5
    await points.flush()
    assert not msg.acked
    running = asyncio.create_task(points.run())
    try:
        await asyncio.wait_for(msg.progressed.wait(), 10)
    finally:
        running.cancel()
    store.refuse.clear()
    await points.flush()
    [queued] = store.queued_runs()
    assert (queued.submit, queued.submitted_at, store.saved) == (submit, 1.0, [])
    assert run.dormant
    assert msg.acked
    restarted = waiting()  # what a restarted coordinator makes of that record
    view = RunView(run_id=submit.run_id, submitted_at=queued.submitted_at)
    restarted.restore(queued.submit, view, 9.0, grace=10.0)
    assert [s.id for s in restarted.queued()] == ["task"]


async def test_a_queue_of_runs_costs_one_record_which_goes_after_the_last_of_them() -> None:
    """A burst of kiqs waiting in the queue used to cost a live write, and later a purge,
    per run; now the runs of a flush share one queued record, purged once each of them
    has a record of its own (its final one here): never before, or a restart would lose
    the runs still waiting."""
    sched = waiting()
    submits = kiqs(40)
    for submit in submits:
        sched.submit(submit, 1.0)
    now = [0.0]
    store, msg = _Store(), _Msg()
    points = Checkpointer(store, sched, clock=lambda: now[0])  # type: ignore[arg-type]
    points.mark(sched.take().changed, [], [(msg, set(sched.runs))])  # type: ignore[list-item]
    now[0] = 5.0  # of age
    await points.flush()
    assert (len(store.queued), store.saved, msg.acked) == (1, [], True)
    by_id = {q.submit.run_id: q.submit for q in store.queued_runs()}
    assert by_id == {s.run_id: s for s in submits}
    ids = [s.run_id for s in submits]
    for run_id in ids[:-1]:
        sched.cancel_run(run_id, "enough", now[0])
    points.mark(*_changes(sched))
    await points.flush()
    assert sorted(v.run_id for _, v in store.saved) == sorted(ids[:-1])
    assert all(v.done for _, v in store.saved)
    assert (len(store.queued), store.dropped) == (1, [])  # the last run is still waiting
    sched.cancel_run(ids[-1], "enough", now[0])
    points.mark(*_changes(sched))
    await points.flush()
    assert (store.queued, len(store.dropped)) == ({}, 1)
    assert set(sched.runs) == set()  # ended and stored: forgotten


def _changes(sched: Scheduler) -> tuple[set[str], list[str], list[Any]]:
    decisions = sched.take()
    return decisions.changed, decisions.finished, []


async def test_a_submission_too_large_for_a_queued_record_is_written_alone() -> None:
    sched = waiting()
    small, large = kiqs(2)
    large = large.model_copy(update={"inputs": {"x": "y" * (QUEUED_BYTES + 1)}})
    for submit in (small, large):
        sched.submit(submit, 1.0)
    store, now = _Store(), [0.0]
    points = Checkpointer(store, sched, clock=lambda: now[0])  # type: ignore[arg-type]
    points.mark(*_changes(sched))
    now[0] = 5.0
    await points.flush()
    assert [q.submit.run_id for q in store.queued_runs()] == [small.run_id]
    assert [v.run_id for _, v in store.saved] == [large.run_id]


def test_the_pass_benchmark_runs_at_tiny_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert scale_passes.main(["--queued", "50,100", "--passes", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].split()[0] == "50"
    assert lines[-1].split()[0] == "100"


class _CountingStore(_Store):
    """Also notes how many records each write sent at once."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    async def save_many(self, items: list[tuple[object, RunView, bool]]) -> dict[str, Exception]:
        self.sizes.append(len(items))
        await asyncio.sleep(0)
        return await super().save_many(items)

    async def save_queued(self, record_id: str, runs: list[tuple[float, bytes]]) -> None:
        self.sizes.append(len(runs))
        await asyncio.sleep(0)
        await super().save_queued(record_id, runs)


async def test_a_deep_queue_is_written_a_chunk_at_a_time() -> None:
    """Tens of thousands of queued runs marked at once were built and sent in one go, which
    held the event loop for seconds (the leader lease lapsed, NATS closed the connection of
    a coordinator that read nothing meanwhile); each write now sends a chunk and waits."""
    runs = 2 * WRITE_CHUNK + 10
    sched = waiting()
    for submit in kiqs(runs):
        sched.submit(submit, 1.0)
    store, msg = _CountingStore(), _Msg()
    points = Checkpointer(store, sched)  # type: ignore[arg-type]
    points.mark(sched.take().changed, [], [(msg, set(sched.runs))])  # type: ignore[list-item]
    await points.flush(everything=True)
    assert max(store.sizes) <= WRITE_CHUNK
    assert sorted(q.submit.run_id for q in store.queued_runs()) == sorted(sched.runs)
    assert msg.acked


async def test_a_chunk_the_store_refuses_is_written_again_with_the_rest_kept() -> None:
    sched = waiting()
    for submit in kiqs(WRITE_CHUNK + 5):
        sched.submit(submit, 1.0)
    store, msg = _CountingStore(), _Msg()
    refused = sorted(sched.runs)[:1]
    store.refuse.update(refused)
    points = Checkpointer(store, sched)  # type: ignore[arg-type]
    points.mark(sched.take().changed, [], [(msg, set(sched.runs))])  # type: ignore[list-item]
    await points.flush(everything=True)
    assert not msg.acked  # one of its runs is not stored
    kept = {q.submit.run_id for q in store.queued_runs()}
    assert kept
    assert not kept & set(refused)
    store.refuse.clear()
    await points.flush(everything=True)
    assert sorted(q.submit.run_id for q in store.queued_runs()) == sorted(sched.runs)
    assert msg.acked


@pytest.mark.parametrize(
    ("runs", "pace"), [(10, (WRITE_EVERY, WRITE_REST)), (LIGHT_WRITES + 1, (TURN_EVERY, 0.0))]
)
async def test_a_flood_s_checkpoint_works_without_rests(
    runs: int, pace: tuple[float, float]
) -> None:
    """Resting between slices of work keeps a light checkpoint off the round trips it
    meets; a flood's checkpoints fell behind that way, and what they had yet to write
    piled up in memory (more than 6 GiB at a million kiqs)."""
    sched = waiting()
    for submit in kiqs(runs):
        sched.submit(submit, 1.0)
    store = _Store()
    points = Checkpointer(store, sched, min_age=0.0)  # type: ignore[arg-type]
    points.mark(sched.take().changed, [], [])
    await points.flush()
    assert (store.turns._every, store.turns._rest) == pace
