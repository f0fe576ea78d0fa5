"""The processes of one scenario: a nats-server, a coordinator and agents, all on loopback.

Every process is started here and remembered by its handle; ``close`` stops exactly those,
by PID, and removes the temporary directory. A process that exits without the scenario
having killed or stopped it is a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.connection import NatsSettings
from taskiq_fleet import CoordinatorClient, FleetError, WorkerView
from tests.natsserver import NatsServer
from tests.processes import FleetProcess, agent, coordinator

CHAOS_APP = "tests.e2e.chaos_tasks:broker"
HEARTBEAT = 0.2
READY_WITHIN = 60.0


@dataclass
class Instance:
    """One process we started, and whether we ended it ourselves."""

    role: str
    proc: FleetProcess
    ended_by_us: bool = False

    def crashed(self) -> bool:
        popen = self.proc.proc
        return popen is not None and popen.poll() is not None and not self.ended_by_us


@dataclass
class Logins:
    """Role users of deploy/nats/accounts.conf (None: a server without authorisation)."""

    passwords: dict[str, str] = field(default_factory=dict)

    def flags(self, user: str) -> tuple[str, ...]:
        if not self.passwords:
            return ()
        return ("--nats-user", user, "--nats-password", self.passwords[user])

    def settings(self, url: str, user: str) -> NatsSettings:
        values: dict[str, object] = {"servers": (url,)}
        if self.passwords:
            values |= {"user": user, "password": self.passwords[user]}
        return NatsSettings.model_validate(values)


class Fleet:
    def __init__(
        self, agents: int, *, server_args: tuple[str, ...] = (), logins: Logins | None = None
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fleet-chaos-"))
        self.record = self.dir / "executions"
        self.record.mkdir()
        self.logins = logins or Logins()
        self.server = NatsServer(self.dir / "nats", extra_args=server_args)
        self.names = [f"a{i + 1}" for i in range(agents)]
        self.instances: list[Instance] = []
        self.coordinator: Instance | None = None
        self.agents: dict[str, Instance] = {}
        self.client: CoordinatorClient | None = None

    @property
    def url(self) -> str:
        return self.server.url

    # -- starting --------------------------------------------------------------------------

    async def start(self) -> CoordinatorClient:
        await asyncio.to_thread(self.server.start)
        self.start_coordinator()
        for name in self.names:
            self.start_agent(name)
        settings = self.logins.settings(self.url, "client")
        self.client = await CoordinatorClient.connect(settings)
        await self.client.wait_ready(len(self.names), within=READY_WITHIN)
        return self.client

    def start_coordinator(self) -> None:
        flags = self.logins.flags("coordinator")
        proc = coordinator(self.url, self.dir, *flags).start()
        self.coordinator = self._remember("coordinator", proc)

    def start_agent(self, name: str) -> None:
        flags = (*self.logins.flags(f"agent-{name}"), "--cpus", "4")
        proc = agent(self.url, name, self.dir, *flags, app=CHAOS_APP, heartbeat=HEARTBEAT)
        self.agents[name] = self._remember(f"agent {name}", proc.start())

    def _remember(self, role: str, proc: FleetProcess) -> Instance:
        instance = Instance(role, proc)
        self.instances.append(instance)
        return instance

    # -- faults ----------------------------------------------------------------------------

    def kill(self, instance: Instance) -> None:
        """SIGKILL, by the PID we started."""
        instance.ended_by_us = True
        instance.proc.kill()

    async def restart_agent(self, name: str) -> None:
        self.kill(self.agents[name])
        since = time.time()
        self.start_agent(name)
        await self.heard_from(name, since)

    async def restart_coordinator(self) -> None:
        assert self.coordinator is not None
        self.kill(self.coordinator)
        self.start_coordinator()
        assert self.client is not None
        await self.client.wait_ready(len(self.names), within=READY_WITHIN)

    async def heard_from(self, name: str, since: float) -> WorkerView:
        """Until the coordinator lists ``name`` as seen after ``since`` (asked every 50 ms:
        nothing announces it to a client)."""
        assert self.client is not None
        async with asyncio.timeout(READY_WITHIN):
            while True:
                try:
                    for view in await self.client.workers():
                        if view.spec.name == name and view.last_seen > since and view.healthy:
                            return view
                except FleetError:
                    pass
                await asyncio.sleep(0.05)

    # -- reading ---------------------------------------------------------------------------

    def crashes(self) -> list[str]:
        return [i.role for i in self.instances if i.crashed()]

    def coordinator_log(self) -> Path:
        return self.dir / "coordinator.log"

    def agent_logs(self) -> list[Path]:
        return sorted(self.dir.glob("agent-*.log"))

    def logs_tail(self, chars: int = 4000) -> str:
        path = self.coordinator_log()
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # -- stopping --------------------------------------------------------------------------

    async def close(self, keep: bool = False) -> None:
        if self.client is not None:
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(self.client.close(), 5)
        for instance in self.instances:
            popen = instance.proc.proc
            if popen is not None and popen.poll() is None:
                instance.ended_by_us = True
                await asyncio.to_thread(instance.proc.stop)
        await asyncio.to_thread(self.server.stop)
        if keep or os.environ.get("CHAOS_KEEP"):
            print(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
