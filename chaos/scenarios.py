"""Scenarios 1 to 3: kill -9 loops of agents, of the coordinator, and NATS stop/start.

Each scenario starts its own fleet, lets runs flow while it injects its fault a bounded
number of times (``rounds``, and at most ``budget`` seconds), then lets every run end and
reads the figures (``chaos.report.Figures``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chaos.fleet import Fleet
from chaos.report import Figures
from chaos.workload import Workload
from taskiq_fleet import FleetError

AGENTS = 3
RESERVATIONS_WITHIN = 10.0


@dataclass(frozen=True)
class Plan:
    rounds: int
    seed: int
    budget: float
    """Seconds of fault injection at most; the rounds left then are skipped (and counted)."""
    flood: int = 20_000
    """Messages of the flood scenario, over all its rounds."""


@dataclass
class Scene:
    """What a scenario's body works with."""

    fleet: Fleet
    work: Workload
    rng: random.Random
    plan: Plan
    figures: Figures
    deadline: float

    def rounds(self) -> range:
        return range(self.plan.rounds)

    def in_time(self, done: int) -> bool:
        if time.monotonic() < self.deadline:
            return True
        self.figures.problems.append(f"budget spent after {done} of {self.plan.rounds} rounds")
        return False


Body = Callable[[Scene], Awaitable[None]]


async def run_scenario(name: str, plan: Plan, body: Body, fleet: Fleet | None = None) -> Figures:
    figures = Figures(name)
    fleet = fleet or Fleet(AGENTS)
    started = time.monotonic()
    try:
        client = await fleet.start()
        work = Workload(client, fleet.record, random.Random(plan.seed))
        scene = Scene(fleet, work, random.Random(plan.seed + 1), plan, figures, 0.0)
        scene.deadline = time.monotonic() + plan.budget
        await body(scene)
        await finish(scene)
    except Exception as exc:  # the table must still be printed, with this as the reason
        figures.problems.append(f"scenario stopped: {exc!r}")
        figures.problems.append("coordinator log tail:\n" + fleet.logs_tail(1500))
    finally:
        figures.crashes = len(fleet.crashes())
        figures.wall = time.monotonic() - started
        await fleet.close()
    return figures


async def finish(scene: Scene) -> None:
    work, figures = scene.work, scene.figures
    await work.settle()
    figures.submitted = len(work.submitted)
    figures.succeeded = work.count("succeeded")
    figures.failed = len(work.views) - figures.succeeded
    figures.lost = len(work.pending())
    figures.twice = len(work.twice())
    figures.reserved_left = await reservations_left(scene.fleet)
    figures.problems += [f"first failures: {f}" for f in work.failures()]
    if work.pending():
        figures.problems.append(f"lost runs (first): {work.pending()[:3]}")
    if work.unsent:
        figures.measures["submissions never accepted by NATS"] = str(work.unsent)
    crashed = scene.fleet.crashes()
    if crashed:
        figures.problems.append(f"crashed: {crashed}")


async def reservations_left(fleet: Fleet) -> int:
    """Workers still holding reservations once every run ended; the books may lag one
    pump iteration, so this asks every 200 ms for up to 10 s before it counts."""
    assert fleet.client is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RESERVATIONS_WITHIN
    held = len(fleet.names)
    while loop.time() < deadline:
        try:
            views = await fleet.client.workers()
        except FleetError:
            views = None
        if views is not None:
            held = sum(1 for v in views if any(amount > 0 for amount in v.reserved.values()))
            if held == 0:
                return 0
        await asyncio.sleep(0.2)
    return held


async def flowing(scene: Scene, faults: Body) -> None:
    """Runs flow (one every 150 ms) while ``faults`` runs."""
    stop = asyncio.Event()
    flow = asyncio.create_task(scene.work.flow(stop))
    try:
        await faults(scene)
    finally:
        stop.set()
        await flow


# -- 1. agent kill -9 loop -------------------------------------------------------------------


async def agent_kills(scene: Scene) -> None:
    async def faults(s: Scene) -> None:
        for done in s.rounds():
            if not s.in_time(done):
                return
            await asyncio.sleep(s.rng.uniform(0.3, 1.2))
            await s.fleet.restart_agent(s.rng.choice(s.fleet.names))
            s.figures.rounds = done + 1

    await flowing(scene, faults)


# -- 2. coordinator kill -9 loop -------------------------------------------------------------


async def coordinator_kills(scene: Scene) -> None:
    """Every other kill lands within a second of a submission."""

    async def faults(s: Scene) -> None:
        for done in s.rounds():
            if not s.in_time(done):
                return
            if done % 2 == 0:
                await s.work.submit(s.rng.randint(1, 3))
                await asyncio.sleep(s.rng.uniform(0.0, 1.0))
            else:
                await asyncio.sleep(s.rng.uniform(1.0, 2.5))
            await s.fleet.restart_coordinator()
            s.figures.rounds = done + 1

    await flowing(scene, faults)


# -- 3. NATS stop/start and kill -9 loop -----------------------------------------------------


async def nats_restarts(scene: Scene) -> None:
    """Stopped (SIGTERM) and killed (SIGKILL) in turn, started again on the same port and
    JetStream directory after an outage of 0.3 to 2 s."""

    async def faults(s: Scene) -> None:
        server, client = s.fleet.server, s.fleet.client
        assert client is not None
        for done in s.rounds():
            if not s.in_time(done):
                return
            await asyncio.sleep(s.rng.uniform(0.5, 1.5))
            await asyncio.to_thread(server.kill if done % 2 else server.stop)
            await asyncio.sleep(s.rng.uniform(0.3, 2.0))
            await asyncio.to_thread(server.start)
            await client.wait_ready(len(s.fleet.names), within=60)
            s.figures.rounds = done + 1

    await flowing(scene, faults)
