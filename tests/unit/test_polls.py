"""Waiting handles' polls: woken in their slot by one timer for all of them."""

from __future__ import annotations

import asyncio

from taskiq_fleet.handles import Flag
from taskiq_fleet.polls import Polls

SLOT = 0.05


async def woken_after(flag: Flag) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.wait_for(flag.wait(), 5)
    return loop.time() - start


async def test_flags_due_in_one_slot_wake_together_not_before_their_time() -> None:
    polls = Polls(SLOT)
    flags = [Flag() for _ in range(50)]
    waits = [asyncio.create_task(woken_after(f)) for f in flags]
    await asyncio.sleep(0)
    for i, flag in enumerate(flags):
        polls.add(flag, 0.1 + i * 0.0005)  # 0.1 to 0.125 s: at most two slots
    times = await asyncio.gather(*waits)
    assert min(times) >= 0.1
    assert max(times) < 0.1 + 3 * SLOT
    assert not any(f.is_set() for f in flags)  # woken, not set: the handle asks and decides


async def test_a_discarded_flag_is_not_woken_and_others_still_are() -> None:
    polls = Polls(SLOT)
    kept, gone = Flag(), Flag()
    kept_wait = asyncio.create_task(woken_after(kept))
    gone_wait = asyncio.create_task(gone.wait())
    await asyncio.sleep(0)
    polls.discard(polls.add(gone, 0.05), gone)
    polls.add(kept, 0.05)
    assert await kept_wait >= 0.05
    await asyncio.sleep(2 * SLOT)
    assert not gone_wait.done()
    gone_wait.cancel()


async def test_one_due_sooner_than_the_armed_slot_is_woken_in_its_own_time() -> None:
    polls = Polls(SLOT)
    late, soon = Flag(), Flag()
    late_wait = asyncio.create_task(woken_after(late))
    soon_wait = asyncio.create_task(woken_after(soon))
    await asyncio.sleep(0)
    polls.add(late, 2.0)
    polls.add(soon, 0.05)
    assert await soon_wait < 1.0
    assert not late_wait.done()
    assert await late_wait >= 2.0
