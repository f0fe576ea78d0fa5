"""The outbox keeps every outcome until a publish succeeds, and retries after failures."""

from __future__ import annotations

import asyncio

from shared.wire.protocol import AttemptRef, Outcome
from worker_agent.outbox import LINGER_MOST, Outbox


def outcome(node: str) -> Outcome:
    return Outcome(
        ref=AttemptRef(run_id="r", node_id=node, attempt=1),
        worker="w",
        status="succeeded",
        return_value=node,
        started_at=1.0,
        finished_at=2.0,
    )


class FlakyStore:
    """Fails while ``down`` is set, like JetStream during a NATS restart."""

    def __init__(self) -> None:
        self.down = True
        self.stored: list[str] = []
        self.attempts = 0
        self.failed = asyncio.Event()

    async def publish(self, batch: list[Outcome]) -> None:
        self.attempts += 1
        if self.down:
            self.failed.set()
            raise TimeoutError("no responders")
        self.stored.extend(o.ref.node_id for o in batch)


async def test_outcomes_wait_for_the_store_and_are_all_delivered_once() -> None:
    store = FlakyStore()
    box = Outbox(store.publish, window=2, backoff=(60.0, 60.0))
    runner = asyncio.create_task(box.run())
    for node in "abc":
        box.put(outcome(node))
    await store.failed.wait()
    assert not await box.flush(0.01)
    assert len(box) == 3
    store.down = False
    box.kick()  # the long backoff would otherwise hold the retry back
    assert await box.flush(5)
    assert sorted(store.stored) == ["a", "b", "c"]
    assert box.pending() == []
    runner.cancel()


async def test_flush_of_an_empty_outbox_is_immediate() -> None:
    box = Outbox(FlakyStore().publish)
    assert await box.flush(0)


class Batches:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.stored = asyncio.Event()

    async def publish(self, batch: list[Outcome]) -> None:
        self.batches.append([o.ref.node_id for o in batch])
        self.stored.set()


async def test_while_the_agent_runs_more_outcomes_wait_for_each_other() -> None:
    """Lingering as long as a minute here: the outcomes go once the agent is idle, at once,
    in one message."""
    store, busy = Batches(), [True]
    box = Outbox(store.publish, busy=lambda: busy[0], linger=60.0)
    runner = asyncio.create_task(box.run())
    box.put(outcome("a"))
    box.put(outcome("b"))
    await asyncio.sleep(0)  # the outbox's turn: it lingers
    assert store.batches == []
    busy[0] = False
    box.put(outcome("c"))
    assert await box.flush(5)
    assert store.batches == [["a", "b", "c"]]
    runner.cancel()


async def test_enough_waiting_outcomes_go_without_lingering() -> None:
    store = Batches()
    box = Outbox(store.publish, busy=lambda: True, linger=60.0)
    runner = asyncio.create_task(box.run())
    for i in range(LINGER_MOST):
        box.put(outcome(f"n{i}"))
    assert await box.flush(5)
    assert [len(b) for b in store.batches] == [LINGER_MOST]
    runner.cancel()


async def test_an_idle_agent_s_outcome_goes_at_once() -> None:
    store = Batches()
    box = Outbox(store.publish, busy=lambda: False, linger=60.0)
    runner = asyncio.create_task(box.run())
    box.put(outcome("a"))
    assert await box.flush(5)
    assert store.batches == [["a"]]
    runner.cancel()
