"""A local cluster for end-to-end tests: coordinator and agents as processes, one client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError

from shared.wire.protocol import Heartbeat, decode_as
from taskiq_fleet import CoordinatorClient, FleetBroker
from tests.processes import TASKS_APP, FleetProcess, agent, coordinator
from tests.standin import Inbox


@dataclass
class Cluster:
    url: str
    log_dir: Path
    client: CoordinatorClient | None = None
    coordinator: FleetProcess | None = None
    agents: dict[str, FleetProcess] = field(default_factory=dict)
    beats: Inbox = field(default_factory=Inbox)
    coordinator_args: tuple[str, ...] = ()
    app: str = TASKS_APP

    def start_coordinator(self, *extra: str) -> FleetProcess:
        self.coordinator_args = extra or self.coordinator_args
        self.coordinator = coordinator(self.url, self.log_dir, *self.coordinator_args).start()
        return self.coordinator

    def start_agent(self, name: str, *extra: str) -> FleetProcess:
        self.agents[name] = agent(self.url, name, self.log_dir, *extra, app=self.app).start()
        return self.agents[name]

    async def connect(self, workers: int) -> CoordinatorClient:
        self.client = await CoordinatorClient.connect(self.url)
        await self.client.nc.subscribe("fleet.agent.heartbeat.*", cb=self._beat)
        await self.client.wait_ready(workers)
        return self.client

    async def _beat(self, msg: Msg) -> None:
        await self.beats.add(decode_as(msg.data, Heartbeat))

    @property
    def heartbeats(self) -> list[Heartbeat]:
        return list(self.beats.items)

    async def heartbeat(self, pred: Callable[[Heartbeat], bool], within: float = 20.0) -> Heartbeat:
        beat: Heartbeat = await self.beats.wait(pred, within)
        return beat

    async def checkpointed(self, run_id: str, within: float = 20.0) -> None:
        """Until the coordinator has written the run's live record to KV. Nothing announces
        a write, so this asks every 20 ms."""
        assert self.client is not None
        kv = await self.client.nc.jetstream().key_value("FLEET_RUNS")
        async with asyncio.timeout(within):
            while True:
                with contextlib.suppress(KeyNotFoundError):
                    await kv.get(f"live.{run_id}")
                    return
                await asyncio.sleep(0.02)

    def logs(self) -> str:
        parts = [] if self.coordinator is None else [self.coordinator.log()]
        parts += [a.log() for a in self.agents.values()]
        return "\n".join(parts)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        for proc in self.agents.values():
            proc.stop()
        if self.coordinator is not None:
            self.coordinator.stop()


@contextlib.asynccontextmanager
async def broker_cluster(
    nats_url: str, log_dir: Path, broker: FleetBroker, app: str, agents: dict[str, list[str]]
) -> AsyncIterator[Cluster]:
    """A coordinator and ``agents`` (name -> extra flags) serving ``app``, with ``broker``
    started against them as a user's process would; everything stopped after."""
    cluster = Cluster(nats_url, log_dir, app=app)
    cluster.start_coordinator()
    for name, flags in agents.items():
        cluster.start_agent(name, *flags)
    try:
        await cluster.connect(workers=len(agents))
        broker.nats = nats_url
        await broker.startup()
        try:
            yield cluster
        finally:
            await broker.shutdown()
    finally:
        await cluster.close()
