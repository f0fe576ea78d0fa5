"""How a client's submissions reach JetStream: a burst of them in a few messages, a lone one
sent by its caller as soon as it is made. A real nats-server with the fleet's streams, no
coordinator: a spy reads what arrives on the submission subject."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from shared.jetstream import ensure_streams
from shared.wire.runs import Submit, parse_submits
from taskiq_fleet import CoordinatorClient, Dag, FleetBroker, Node

pytestmark = pytest.mark.integration

ONE = Dag(nodes=(Node(id="only", task="noop"),))


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[CoordinatorClient]:
    async with await CoordinatorClient.connect(nats_url) as c:
        await ensure_streams(c.nc.jetstream(), c.subjects)
        yield c


class Spy:
    """The run ids of each message on the submission subject, in the order they came."""

    def __init__(self) -> None:
        self.messages: list[list[str]] = []
        self.runs = 0
        self._wanted = 0
        self._enough = asyncio.Event()

    async def heard(self, msg: Msg) -> None:
        runs = [s.run_id for s in parse_submits(msg.data) if isinstance(s, Submit)]
        self.messages.append(runs)
        self.runs += len(runs)
        if self.runs >= self._wanted:
            self._enough.set()

    async def until(self, count: int) -> list[str]:
        self._wanted = count
        if self.runs < count:
            self._enough.clear()
            await asyncio.wait_for(self._enough.wait(), 10)
        return [run_id for message in self.messages for run_id in message]


@pytest.fixture
async def spy(nats_url: str, client: CoordinatorClient) -> AsyncIterator[Spy]:
    found = Spy()
    nc = await nats.connect(nats_url)
    await nc.subscribe(client.subjects.submit, cb=found.heard)
    await nc.flush()
    try:
        yield found
    finally:
        await nc.close()


async def test_a_burst_of_submissions_goes_in_a_few_messages_each_run_once(
    client: CoordinatorClient, spy: Spy
) -> None:
    """The first is sent at once by its caller; those made while it is in flight follow
    together, none left behind (each ``submit`` returns only once JetStream stored it)."""
    burst = asyncio.gather(*(client.submit(ONE, progress=False) for _ in range(200)))
    handles = await asyncio.wait_for(burst, 10)
    runs = await spy.until(200)
    assert sorted(runs) == sorted(h.run_id for h in handles)
    assert len(spy.messages) <= 3, [len(m) for m in spy.messages]
    assert spy.messages[0] == [handles[0].run_id]


async def test_submissions_made_one_after_another_go_one_each(
    client: CoordinatorClient, spy: Spy
) -> None:
    handles = [await client.submit(ONE, progress=False) for _ in range(5)]
    await spy.until(5)
    assert spy.messages == [[h.run_id] for h in handles]


async def test_kiqs_waiting_for_their_acknowledgement_hold_bytes_not_models(
    nats_url: str, client: CoordinatorClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst's kiqs all wait for JetStream together; what they hold then is walked by
    every full garbage collection of the caller's process."""
    broker = FleetBroker(nats_url)
    noop = broker.task(task_name="noop")(_noop)
    await broker.startup()
    await noop.kiq(-1)  # the task's template node, made once and kept
    gc.collect()
    before = sum(isinstance(o, Submit | Dag | Node) for o in gc.get_objects())
    held, entered = asyncio.Event(), asyncio.Event()
    publish = CoordinatorClient._publish_durably

    async def late(self: CoordinatorClient, *args: Any) -> None:
        entered.set()
        await held.wait()
        await publish(self, *args)

    monkeypatch.setattr(CoordinatorClient, "_publish_durably", late)
    try:
        kiqs = [asyncio.create_task(noop.kiq(i)) for i in range(200)]
        await entered.wait()  # the first is being published; the others queued behind it
        assert len(broker.connected()._outgoing) == 199  # type: ignore[union-attr]
        gc.collect()
        models = sum(isinstance(o, Submit | Dag | Node) for o in gc.get_objects()) - before
        held.set()
        tasks = await asyncio.wait_for(asyncio.gather(*kiqs), 10)
    finally:
        held.set()
        await broker.shutdown()
    assert len({t.task_id for t in tasks}) == 200
    assert models == 0, f"{models} submission models held by kiqs waiting to be stored"


async def _noop(x: int) -> int:
    return x
