"""Runs that flow while faults happen, and what became of them.

Each run is a two-node chain of ``chaos_step`` (tests/e2e/chaos_tasks.py). A run's end is
asked of the coordinator (``status``), not awaited as a push: a push sent while the client
was reconnecting, or by a coordinator that was then killed, is not sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from taskiq_fleet import CoordinatorClient, Dag, FleetError, Node, RunView

SUBMIT_TRIES = 20
"""A submission that fails (NATS is restarting) is sent again under the same run id; the
stream de-duplicates by run id, so a retry after a lost ack is one run."""
END_WITHIN = 90.0
"""After the faults stop, how long every run gets to end before it counts as lost."""


def chain(run_id: str, record: Path, rng: random.Random) -> Dag:
    def step(node: str, **extra: object) -> dict[str, object]:
        seconds = round(rng.uniform(0.05, 0.4), 3)
        return {"seconds": seconds, "tag": f"{run_id}.{node}", "record": str(record), **extra}

    return Dag(
        nodes=(
            Node(id="first", task="chaos_step", kwargs=step("first"), outputs=("x",)),
            Node(
                id="second",
                task="chaos_step",
                inputs={"x": "x"},
                kwargs=step("second"),
                outputs=("y",),
            ),
        )
    )


@dataclass
class Workload:
    client: CoordinatorClient
    record: Path
    rng: random.Random
    submitted: list[str] = field(default_factory=list)
    unsent: int = 0
    views: dict[str, RunView] = field(default_factory=dict)

    async def submit(self, count: int = 1) -> None:
        for _ in range(count):
            run_id = f"r{len(self.submitted):05d}{uuid.uuid4().hex[:6]}"
            if await self._send(run_id):
                self.submitted.append(run_id)
            else:
                self.unsent += 1

    async def _send(self, run_id: str) -> bool:
        dag = chain(run_id, self.record, self.rng)
        for _ in range(SUBMIT_TRIES):
            try:
                await self.client.submit(dag, run_id=run_id, progress=False)
            except FleetError:
                await asyncio.sleep(0.25)
                continue
            return True
        return False

    async def flow(self, stop: asyncio.Event, every: float = 0.15) -> None:
        """Submit one run every ``every`` seconds until ``stop``."""
        while not stop.is_set():
            await self.submit()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    async def settle(self, within: float = END_WITHIN) -> None:
        """Until every submitted run has ended, or ``within`` seconds; asked every 250 ms."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.pending() and loop.time() < deadline:
            await asyncio.gather(*(self._ask(run_id) for run_id in self.pending()[:200]))
            await asyncio.sleep(0.25)

    def pending(self) -> list[str]:
        return [r for r in self.submitted if r not in self.views]

    async def _ask(self, run_id: str) -> None:
        try:
            view = await self.client.status(run_id, missing_ok=True)
        except FleetError:
            return
        if view is not None and view.done:
            self.views[run_id] = view

    # -- figures ---------------------------------------------------------------------------

    def count(self, status: str) -> int:
        return sum(1 for v in self.views.values() if v.status == status)

    def failures(self, limit: int = 3) -> list[str]:
        bad = [v for v in self.views.values() if v.status != "succeeded"]
        return [f"{v.run_id} {v.status}: {v.error[:160]}" for v in bad[:limit]]

    def twice(self) -> list[str]:
        """Nodes that completed more than once under one attempt (``<run>.<node>.<attempt>``)."""
        done = Counter(".".join(p.name.split(".")[:3]) for p in self.record.iterdir())
        return sorted(key for key, n in done.items() if n > 1)
