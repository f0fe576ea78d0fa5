"""Smoke tests that the NATS fixtures give later integration tests a broker they can trust:
core messaging, JetStream, and a restart that keeps data and lets clients reconnect.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from taskiq_fleet.natsserver import MAX_PENDING
from tests.natsserver import (
    NATS_SERVER_ENV,
    NatsEndpoint,
    NatsServer,
    NatsServerError,
    NatsServerNotFoundError,
    find_nats_server,
    free_port,
)

pytestmark = pytest.mark.integration

TIMEOUT = 5.0


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url, connect_timeout=TIMEOUT, allow_reconnect=False)
    try:
        yield client
    finally:
        await client.close()


async def test_core_publish_subscribe(nc: Client) -> None:
    sub = await nc.subscribe("smoke.core")
    await nc.flush()

    await nc.publish("smoke.core", b"hello")
    msg = await sub.next_msg(timeout=TIMEOUT)

    assert (msg.subject, msg.data) == ("smoke.core", b"hello")


async def test_jetstream_pull_consumer(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(name="SMOKE", subjects=["smoke.js.>"])

    ack = await js.publish("smoke.js.one", b"payload")
    psub = await js.pull_subscribe("smoke.js.>", durable="smoke")
    msgs = await psub.fetch(1, timeout=TIMEOUT)

    assert (ack.stream, ack.seq) == ("SMOKE", 1)
    assert [(m.subject, m.data) for m in msgs] == [("smoke.js.one", b"payload")]
    await msgs[0].ack()


async def test_restart_keeps_jetstream_data_and_client_reconnects(
    nats_server: NatsEndpoint,
) -> None:
    disconnected = asyncio.Event()
    reconnected = asyncio.Event()

    async def on_disconnected() -> None:
        disconnected.set()

    async def on_reconnected() -> None:
        reconnected.set()

    client = await nats.connect(
        nats_server.url,
        connect_timeout=TIMEOUT,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.05,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
    )
    try:
        js = client.jetstream()
        await js.add_stream(name="DURABLE", subjects=["durable.>"])
        ack = await js.publish("durable.before", b"survives restart")
        old_pid = nats_server.pid if isinstance(nats_server, NatsServer) else None

        await asyncio.to_thread(nats_server.restart)
        await asyncio.wait_for(reconnected.wait(), timeout=TIMEOUT)

        assert disconnected.is_set()
        if isinstance(nats_server, NatsServer):
            assert nats_server.pid != old_pid
        stored = await js.get_msg("DURABLE", ack.seq)
        assert stored.data == b"survives restart"
        psub = await js.pull_subscribe("durable.>", durable="after-restart")
        msgs = await psub.fetch(1, timeout=TIMEOUT)
        assert [m.data for m in msgs] == [b"survives restart"]
    finally:
        await client.close()


def test_stop_reaps_only_its_own_process(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "a") as first:
        second = NatsServer(tmp_path / "b").start()
        pid = second.pid
        second.stop()

        assert not second.running
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert first.running


def test_port_conflict_is_reported_not_mistaken_for_success(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "a") as first:
        intruder = NatsServer(tmp_path / "b", port=first.port)
        with pytest.raises(NatsServerError, match="failed to start"):
            intruder.start()

        assert not intruder.running
        assert first.running


def test_startup_failure_includes_log_tail(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, extra_args=["--no-such-flag"])

    with pytest.raises(NatsServerError, match="no-such-flag"):
        server.start()
    assert not server.running


def test_bad_binary_override_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NATS_SERVER_ENV, str(tmp_path / "missing-nats-server"))

    with pytest.raises(NatsServerNotFoundError, match=NATS_SERVER_ENV):
        find_nats_server()


def test_the_embedded_server_holds_more_than_two_stream_windows_for_a_reader(
    tmp_path: Path,
) -> None:
    """``fleet up``, the tests and the benchmarks start this server; its ``max_pending``
    must exceed what the coordinator's two flow-controlled consumers may have in flight
    (32 MB each), or a flood cuts the coordinator off as a slow consumer."""
    monitor = free_port()
    with NatsServer(tmp_path, extra_args=("-m", str(monitor))) as server:
        assert server.running
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/varz", timeout=10) as page:
            varz = json.load(page)
    assert varz["max_pending"] == MAX_PENDING > 2 * (32 << 20)
