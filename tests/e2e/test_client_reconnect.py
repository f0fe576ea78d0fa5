"""A client never waits for ever: a run that ends while the client's own NATS connection is
down (its pushed end is lost) is still seen to end once the client is back.

The client reaches nats-server through a TCP relay on loopback that the test cuts and
restores; the coordinator and the agent keep their own connections, so the run goes on
and ends while only the client is away.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from urllib.parse import urlsplit

import nats
import pytest
from nats.aio.msg import Msg

from shared.wire.protocol import decode_model
from shared.wire.runs import RunUpdate, RunView
from shared.wire.subjects import Subjects
from taskiq_fleet import CoordinatorClient, Dag, Node
from taskiq_fleet import client as client_module
from taskiq_fleet.client import RunHandle
from taskiq_fleet.polls import Polls
from tests.e2e.cluster import Cluster

BACK_WITHIN = 8.0
"""From the relay's return to ``wait()`` returning: the reconnect takes about a second;
this stays under the handles' shortest poll interval (10 s), so the reconnect is what
answers, not the periodic check."""
WITHIN = 30.0


class Relay:
    """Copies bytes between clients on ``port`` and ``target``; ``cut`` drops every
    connection and refuses new ones until ``restore``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return f"nats://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]
        await asyncio.gather(
            _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
        )

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        await self._server.wait_closed()

    async def restore(self) -> None:
        await self.start()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def disconnected(client: CoordinatorClient, within: float = WITHIN) -> None:
    """Until the client's connection is down; nats-py announces that only to the callback
    given at connect, so this asks every 20 ms."""
    try:
        async with asyncio.timeout(within):
            while client.nc.is_connected:  # noqa: ASYNC110 - no event to await
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"the client still connected {within} s after the relay was cut")


def is_running(nodes: object) -> bool:
    assert isinstance(nodes, dict)
    return any(node.status == "running" for node in nodes.values())


async def test_a_run_that_ends_while_the_client_is_away_is_seen_to_end(
    cluster: Cluster, nats_url: str, tmp_path: Path
) -> None:
    port = urlsplit(nats_url).port
    assert port is not None
    relay = Relay(port)
    client_url = await relay.start()
    cluster.start_coordinator()
    cluster.start_agent("a1", "--cpus", "2")
    client = cluster.client = await CoordinatorClient.connect(client_url)
    await client.wait_ready(1, within=WITHIN)

    gate = tmp_path / "gate"
    dag = Dag(nodes=(Node(id="gated", task="async_wait_for_gate", kwargs={"gate": str(gate)}),))
    handle = await client.submit(dag)
    running = asyncio.Event()
    handle.on_update(lambda _: running.set() if is_running(handle.nodes) else None)
    if is_running(handle.nodes):
        running.set()
    ends: asyncio.Queue[RunUpdate] = asyncio.Queue()

    async def on_update(msg: Msg) -> None:
        update = decode_model(msg.data, RunUpdate)
        if update.run is not None:
            ends.put_nowait(update)

    observer = await nats.connect(nats_url)  # straight to the server, not through the relay
    try:
        await observer.subscribe(Subjects().run_updates(handle.run_id), cb=on_update)
        await observer.flush()
        async with asyncio.timeout(WITHIN):
            await running.wait()

        await relay.cut()
        await disconnected(client)
        gate.touch()
        async with asyncio.timeout(WITHIN):
            end = await ends.get()  # pushed to the client too, which was not there
        assert end.run is not None
        assert end.run.status == "succeeded"
        assert not handle.done

        await relay.restore()
        try:
            view = await handle.wait(timeout=BACK_WITHIN)
        except TimeoutError:
            pytest.fail(f"wait() still waiting {BACK_WITHIN} s after the client was back")
        assert view.status == "succeeded"
        assert view.run_id == handle.run_id
    finally:
        with contextlib.suppress(Exception):
            await observer.close()
        await relay.cut()


class Coordinator:
    """Stands in for a client whose pushes never arrive: only ``status`` answers."""

    def __init__(self, ends_after: int) -> None:
        self.asked = 0
        self.ends_after = ends_after
        self._handles: dict[str, RunHandle] = {}
        self.polls = Polls(0.01)

    async def status(self, run_id: str, *, missing_ok: bool = False) -> RunView | None:
        self.asked += 1
        if self.asked < self.ends_after:
            return RunView(run_id=run_id, status="running")
        return RunView(run_id=run_id, status="succeeded")


async def test_a_push_lost_without_a_reconnect_is_found_by_asking_now_and_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No reconnect to wake it: the handle asks on its own, at jittered intervals."""
    monkeypatch.setattr(client_module, "POLL_EVERY", (0.05, 0.1))
    coordinator = Coordinator(ends_after=3)
    handle = RunHandle(coordinator, "lost-push", from_start=True)  # type: ignore[arg-type]
    seen: list[RunUpdate] = []
    handle.on_update(seen.append)
    view = await handle.wait(timeout=WITHIN)
    assert view.status == "succeeded"
    assert coordinator.asked == 3
    assert [u.run for u in seen] == [view]  # listeners hear of the end as of a pushed one


async def test_a_reconnect_heard_between_two_asks_makes_the_next_wait_ask_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The push lost in a disconnect that ended while the handle was asking (not pausing):
    it asks again at once, not a poll interval later."""
    monkeypatch.setattr(client_module, "POLL_EVERY", (3600.0, 3600.0))
    coordinator = Coordinator(ends_after=1)
    handle = RunHandle(coordinator, "poked", from_start=True)  # type: ignore[arg-type]
    handle._poke()  # as CoordinatorClient.reconnected does
    view = await handle.wait(timeout=WITHIN)
    assert view.status == "succeeded"
    assert coordinator.asked == 1
