"""A run handle's cost and its flags: a client holds one for every run it kicked that has not
ended (a million, kicked at once), so it must be small."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import pytest

from shared.wire.runs import RunUpdate, RunView
from taskiq_fleet.handles import PushedRun


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
