"""The agent starts an app's broker as ``taskiq worker`` would for its tasks, never its
transport: a taskiq-nats broker whose servers are out of reach must not stop an agent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from taskiq import InMemoryBroker, TaskiqEvents, TaskiqMiddleware
from taskiq.brokers.inmemory_broker import InmemoryResultBackend
from taskiq_nats import NatsBroker, PullBasedJetStreamBroker

from worker_agent.app import start_app, stop_app

UNREACHABLE = "nats://127.0.0.1:1"


class Recorder(TaskiqMiddleware):
    def __init__(self, seen: list[str]) -> None:
        super().__init__()
        self.seen = seen

    def startup(self) -> None:
        self.seen.append("middleware startup")

    def shutdown(self) -> None:
        self.seen.append("middleware shutdown")


class RecordingBackend(InmemoryResultBackend[Any]):
    def __init__(self, seen: list[str]) -> None:
        super().__init__()
        self.seen = seen

    async def startup(self) -> None:
        self.seen.append("backend startup")

    async def shutdown(self) -> None:
        self.seen.append("backend shutdown")


@pytest.mark.parametrize(
    "make",
    [
        lambda: NatsBroker(UNREACHABLE),
        lambda: PullBasedJetStreamBroker(UNREACHABLE),
        InMemoryBroker,
    ],
    ids=["NatsBroker", "PullBasedJetStreamBroker", "InMemoryBroker"],
)
async def test_the_taskiq_side_starts_and_stops_without_the_transport(make: Any) -> None:
    seen: list[str] = []
    broker = make().with_middlewares(Recorder(seen)).with_result_backend(RecordingBackend(seen))
    for event in TaskiqEvents:
        broker.add_event_handler(event, lambda _state, e=event: seen.append(e.value))
    async with asyncio.timeout(5):  # a transport's connect would retry far longer
        await start_app(broker)
        await stop_app(broker)
    assert broker.is_worker_process
    assert seen == [
        TaskiqEvents.WORKER_STARTUP.value,
        "middleware startup",
        "backend startup",
        TaskiqEvents.WORKER_SHUTDOWN.value,
        "middleware shutdown",
        "backend shutdown",
    ]
