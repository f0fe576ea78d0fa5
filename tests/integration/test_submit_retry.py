"""A submission whose JetStream acknowledgement is late is sent again, and stored once
(a real nats-server, paused with SIGSTOP; no coordinator)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

import taskiq_fleet.client as client_module
from shared.jetstream import ensure_streams
from taskiq_fleet import CoordinatorClient, Dag, Node
from tests.natsserver import NatsEndpoint, NatsServer

pytestmark = pytest.mark.integration


class _Warnings:
    """The client module's logger, noting its warnings as they come."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.seen = asyncio.Event()

    def warning(self, event: str, **fields: Any) -> None:
        self.seen.set()
        self.real.warning(event, **fields)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[CoordinatorClient]:
    async with await CoordinatorClient.connect(nats_url) as c:
        await ensure_streams(c.nc.jetstream(), c.subjects)
        yield c


async def test_a_submission_acknowledged_late_is_sent_again_and_stored_once(
    client: CoordinatorClient, nats_server: NatsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server busy with a deep queue acknowledged a publish after the client's timeout
    and the kiq failed (``could not submit: TimeoutError()``)."""
    if not isinstance(nats_server, NatsServer):
        pytest.skip("needs the local nats-server (paused with SIGSTOP)")
    monkeypatch.setattr(client_module, "SUBMIT_TIMEOUT", 0.5, raising=False)
    warnings = _Warnings(client_module.log)
    monkeypatch.setattr(client_module, "log", warnings)
    dag = Dag(nodes=(Node(id="n", task="echo", kwargs={"value": 1}),))
    js = client.nc.jetstream()
    before = (await js.stream_info("FLEET_SUBMISSIONS")).state.messages
    os.kill(nats_server.pid, signal.SIGSTOP)
    try:
        submitting = asyncio.create_task(client.submit(dag))
        await asyncio.wait_for(warnings.seen.wait(), 10)  # the first try timed out
    finally:
        os.kill(nats_server.pid, signal.SIGCONT)
    handle = await asyncio.wait_for(submitting, 10)
    info = await js.stream_info("FLEET_SUBMISSIONS")
    assert info.state.messages == before + 1
    last = await js.get_last_msg("FLEET_SUBMISSIONS", client.subjects.submit)
    assert handle.run_id.encode() in (last.data or b"")
