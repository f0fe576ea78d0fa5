"""Grouping and flush logic of client-side batching, with a fake clock."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from taskiq_fleet.batching import (
    Batch,
    BatchConfig,
    BatchConfigError,
    Batcher,
    BatchQueue,
    member_result,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _batcher(clock: Clock) -> Batcher:
    ids = itertools.count()
    return Batcher(clock, new_id=lambda: f"b{next(ids)}")


def _add(
    b: Batcher,
    task_id: str,
    item: Any,
    *,
    size: int = 3,
    timeout: float = 2.0,
    task: str = "t",
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> tuple[Batch, int, bool]:
    return b.add(
        task,
        task_id,
        item,
        args=args or [],
        kwargs=kwargs or {},
        labels={},
        config=BatchConfig(size, timeout),
    )


def test_config_from_labels() -> None:
    assert BatchConfig.from_labels({}) is None
    assert BatchConfig.from_labels({"batch": False}) is None
    assert BatchConfig.from_labels({"batch": True}) == BatchConfig(100, 3.0)
    assert BatchConfig.from_labels(
        {"batch": "True", "batch_size": "60", "batch_timeout": "3"}
    ) == BatchConfig(60, 3.0)
    with pytest.raises(BatchConfigError):
        BatchConfig.from_labels({"batch": True, "batch_size": 0})
    with pytest.raises(BatchConfigError):
        BatchConfig.from_labels({"batch": True, "batch_timeout": -1})
    with pytest.raises(BatchConfigError):
        BatchConfig.from_labels({"batch": True, "batch_size": "many"})


def test_flushes_when_full_and_opens_a_new_batch() -> None:
    b = _batcher(Clock())
    got = [_add(b, f"k{i}", i) for i in range(4)]
    assert [(batch.run_id, idx, full) for batch, idx, full in got] == [
        ("b0", 0, False),
        ("b0", 1, False),
        ("b0", 2, True),
        ("b1", 0, False),
    ]
    assert got[0][0].items == [0, 1, 2]
    assert b.pending() == 1


def test_flushes_at_the_timeout_after_the_first_item() -> None:
    clock = Clock()
    b = _batcher(clock)
    _add(b, "k0", 0, timeout=2.0)
    clock.now += 1.5
    _add(b, "k1", 1, timeout=2.0)  # does not push the deadline
    assert b.next_deadline() == 102.0
    assert b.due() == []
    clock.now += 0.5
    (batch,) = b.due()
    assert batch.items == [0, 1]
    assert len(b) == 0
    assert b.next_deadline() is None


def test_groups_per_task_and_other_arguments() -> None:
    b = _batcher(Clock())
    x, _, _ = _add(b, "1", 1, kwargs={"factor": 2})
    y, _, _ = _add(b, "2", 2, kwargs={"factor": 3})
    z, _, _ = _add(b, "3", 3, kwargs={"factor": 2})
    w, _, _ = _add(b, "4", 4, kwargs={"factor": 2}, task="other")
    assert x is z
    assert x is not y
    assert x is not w
    assert len(b) == 3
    assert sorted(len(batch.members) for batch in b.drain()) == [1, 1, 2]
    assert len(b) == 0


def test_call_puts_the_list_in_the_item_s_place() -> None:
    b = _batcher(Clock())
    pos, _, _ = _add(b, "1", "a", args=[5], kwargs={"k": 1})
    assert pos.call() == ([["a"], 5], {"k": 1})
    named, _, _ = b.add(
        "t",
        "2",
        "a",
        args=[],
        kwargs={"k": 1},
        labels={},
        config=BatchConfig(3, 1),
        item_name="items",
    )
    assert named.call() == ([], {"k": 1, "items": ["a"]})


def test_the_hang_script_grouping() -> None:
    clock = Clock()
    b = _batcher(clock)
    full = [
        batch for i in range(400) for batch, _, f in [_add(b, str(i), i, size=60, timeout=3)] if f
    ]
    assert [len(batch.members) for batch in full] == [60] * 6
    assert b.due() == []
    clock.now += 3
    (last,) = b.due()
    assert len(last.members) == 40


def test_member_result() -> None:
    assert member_result([10, 20, 30], 1, 3) == 20
    assert member_result([10, 20], 1, 3) == [10, 20]
    assert member_result(True, 2, 3) is True


async def test_queue_submits_in_the_background_and_on_flush() -> None:
    submitted: list[list[Any]] = []
    gate = asyncio.Event()

    async def submit(batch: Batch) -> str:
        await gate.wait()
        submitted.append(batch.items)
        return f"handle-{batch.run_id}"

    q = BatchQueue(submit)
    cfg = BatchConfig(2, 60)
    for i in range(3):  # add returns at once even though submission is blocked
        q.add("t", f"k{i}", i, args=[], kwargs={}, labels={}, config=cfg)
    run0, idx, _ = q.run_of("k1") or ("", -1, None)
    assert idx == 1
    gate.set()
    assert await q.submission(run0) == f"handle-{run0}"
    await q.flush()  # the open batch of one
    assert submitted == [[0, 1], [2]]
    assert q.run_of("missing") is None


async def test_queue_flushes_on_its_timer() -> None:
    got: list[list[Any]] = []

    async def submit(batch: Batch) -> None:
        got.append(batch.items)

    q = BatchQueue(submit)
    q.add("t", "a", 1, args=[], kwargs={}, labels={}, config=BatchConfig(10, 0.05))
    run_id = q.members["a"][0].run_id
    await asyncio.wait_for(q.submission(run_id), 2)
    assert got == [[1]]


async def test_queue_reports_a_failed_submission() -> None:
    async def submit(batch: Batch) -> None:
        raise ConnectionError("down")

    q = BatchQueue(submit)
    q.add("t", "a", 1, args=[], kwargs={}, labels={}, config=BatchConfig(1, 1))
    run_id = q.members["a"][0].run_id
    with pytest.raises(ConnectionError):
        await q.submission(run_id)
