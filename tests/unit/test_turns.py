"""``Turns``: the event loop gets a turn once enough time of work went by, not before."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.turns import Turns


@pytest.mark.parametrize("rested_at", [None, 10.0])
async def test_the_loop_gets_a_turn_only_once_the_time_is_up(rested_at: float | None) -> None:
    """Counted from the start, or from the last rest (``rested``): a pass that starts after
    the loop waited does not yield at its first event, however long the wait was."""
    now = [0.0]
    turns = Turns(every=0.005, clock=lambda: now[0])
    ran: list[float] = []

    async def other() -> None:
        ran.append(now[0])

    task = asyncio.get_running_loop().create_task(other())
    if rested_at is not None:  # a quiet spell, then an event
        now[0] = rested_at
        turns.rested()
    start = now[0]
    now[0] = start + 0.004
    await turns.take()
    assert ran == []  # not yet: no turn given
    now[0] = start + 0.005
    await turns.take()
    assert ran == [start + 0.005]
    await task


async def test_a_rest_lets_through_work_that_needs_several_turns() -> None:
    """A message takes several turns of the loop from the socket to the pump: a bare yield
    lets it one step further, a rest lets it through."""
    now = [0.0]
    steps: list[int] = []

    async def message() -> None:
        for step in range(4):
            steps.append(step)
            await asyncio.sleep(0)

    for rest, expected in ((0.0, [0]), (0.05, [0, 1, 2, 3])):
        steps.clear()
        turns = Turns(every=0.001, clock=lambda: now[0], rest=rest)
        task = asyncio.get_running_loop().create_task(message())
        now[0] += 0.001
        await turns.take()
        assert steps == expected
        await task
