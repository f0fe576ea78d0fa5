"""A run handle's cost and its flags: a client holds one for every run it kicked that has not
ended (a million, kicked at once), so it must be small."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import pytest

from shared.dag import Dag, Node
from shared.wire.runs import RunUpdate, RunView, Submit
from taskiq_fleet import client as client_module
from taskiq_fleet.client import RunHandle
from taskiq_fleet.handles import PushedRun
from taskiq_fleet.polls import Polls


def test_a_run_handle_waiting_for_its_end_costs_less_than_500_bytes() -> None:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        handles = [PushedRun(f"run{i}") for i in range(10_000)]
        per_handle = (tracemalloc.get_traced_memory()[0] - before) / len(handles)
    finally:
        tracemalloc.stop()
    assert per_handle < 500, f"{per_handle:.0f} bytes per handle"


async def test_the_end_wakes_every_waiter_and_a_cancelled_one_is_not_kept() -> None:
    handle = PushedRun("r")
    first = asyncio.create_task(handle._done.wait())
    gone = asyncio.create_task(handle._done.wait())
    await asyncio.sleep(0)  # both are waiting now
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert not handle.done
    handle._apply(RunUpdate(run_id="r", status="succeeded", run=RunView(run_id="r")))
    assert await asyncio.wait_for(first, 5) is True
    assert handle.done
    assert await handle._done.wait() is True  # already ended: at once


async def test_a_flag_cleared_waits_for_the_next_set() -> None:
    handle = PushedRun("r")
    flag = handle._done
    flag.set()
    flag.clear()
    waiter = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    flag.set()
    assert await asyncio.wait_for(waiter, 5) is True


class Client:
    """A client whose coordinator never answers: its handles wait."""

    def __init__(self) -> None:
        self.polls = Polls(1.0)
        self._handles: dict[str, RunHandle] = {}

    async def status(self, run_id: str, *, missing_ok: bool = False) -> RunView | None:
        return None


def one_node(run_id: str) -> Submit:
    node = Node(id="n", task="noop", kwargs={"x": run_id}, outputs=("out",))
    return Submit(run_id=run_id, dag=Dag(nodes=(node,)), submitted_at=0.0)


async def test_a_waiting_handle_holds_few_objects_for_the_garbage_collector() -> None:
    """Each one is walked by every full collection of the caller's process, a million
    kicked at once included: the handle keeps plain values, and its poll shares a timer."""
    client, n = Client(), 2_000
    submits = [one_node(f"run{i}") for i in range(n)]
    gc.collect()
    before = len(gc.get_objects())
    handles = [RunHandle(client, s.run_id, from_start=True) for s in submits]  # type: ignore[arg-type]
    for handle, submit in zip(handles, submits, strict=True):
        handle._solo = client_module._solo(submit)
    waits = [asyncio.create_task(h.wait()) for h in handles]
    await asyncio.sleep(0)
    gc.collect()
    per_handle = (len(gc.get_objects()) - before) / n
    for w in waits:
        w.cancel()
    await asyncio.gather(*waits, return_exceptions=True)
    # 14: the handle, its flag and nodes; the waiting task, its coroutines and future (20 with
    # a timer of its own for the poll and the whole node kept)
    assert per_handle <= 15, f"{per_handle:.1f} tracked objects per waiting handle"
