"""Scenario 4: malformed and deeply nested messages on every subject the coordinator and
the agents listen on, while runs flow.

The control plane must not starve: while the flood lasts, a probe asks the coordinator
for its workers every 100 ms and keeps the worst *staleness* it sees (now minus the
oldest ``last_seen`` of a live worker, taken when the answer arrives: a coordinator that
stalls, or handles heartbeats late, shows it either way). No worker may be lost, and the
bytes the coordinator and agents log for the flood are printed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

from nats.aio.msg import Msg

from chaos.fleet import Fleet
from chaos.scenarios import Scene, flowing
from shared.connection import connect
from shared.wire.subjects import CONTROL_VERBS, Subjects
from taskiq_fleet import FleetError

CHUNK = 500
"""Messages between flushes of the flooding connection."""
DEEP = 5_000


def junk() -> list[bytes]:
    """Malformed input of every kind: not JSON, wrong or missing fields, too deep."""
    deep_value = b'{"type":"heartbeat","version":1,"worker":"a1","x":'
    deep_value += b"[" * DEEP + b"]" * DEEP + b"}"
    return [
        b"",
        b"not json",
        b"{",
        b"\xff\xfe\x00garbage",
        b"[" * DEEP,
        b"{" * DEEP,
        deep_value,
        b'{"type":"no-such-type","version":1}',
        b'{"type":"heartbeat","version":1}',
        b'{"type":"batch","version":1,"items":[' + b"[" * DEEP + b"]}",
        b'{"type":"heartbeat","version":999,"worker":"a1"}',
        b"[" + b"1," * 2_000 + b"1]",
    ]


def targets(s: Subjects, workers: list[str]) -> list[str]:
    """Every subject the coordinator (core and both streams) and each agent listens on."""
    found = [s.submit, *(s.ctl(verb) for verb in CONTROL_VERBS)]
    for w in workers:
        found += [s.register(w), s.heartbeat(w), s.deregister(w), s.ack(w)]
        found += [s.outcome(w, "junk-run", "junk-node"), s.worker_outcomes(w)]
        found += [s.assign(w), s.cancel(w)]
    return found


@dataclass
class Probe:
    workers: int
    worst: float = 0.0
    """Seconds: the oldest last_seen behind the probe's clock, at its worst."""
    slowest: float = 0.0
    """Seconds: the slowest answer to ``workers``."""
    missing: int = 0
    """Answers that listed fewer live workers than were started."""
    beats: dict[str, float] = field(default_factory=dict)
    """When an observer (the suite's own connection) last heard each worker's heartbeat."""
    beat_gap: float = 0.0
    """Seconds: the longest silence between two heartbeats of one worker, as observed
    outside the coordinator (agents or NATS slowed down, not the coordinator)."""

    async def heard(self, msg: Msg) -> None:
        now = time.time()
        worker = msg.subject.rsplit(".", 1)[-1]
        last = self.beats.get(worker)
        if last is not None:
            self.beat_gap = max(self.beat_gap, now - last)
        self.beats[worker] = now

    async def watch(self, fleet: Fleet, stop: asyncio.Event) -> None:
        assert fleet.client is not None
        sub = await fleet.client.nc.subscribe(Subjects().all_heartbeats, cb=self.heard)
        try:
            await self._ask(fleet, stop)
        finally:
            await sub.unsubscribe()

    async def _ask(self, fleet: Fleet, stop: asyncio.Event) -> None:
        assert fleet.client is not None
        while not stop.is_set():
            asked = time.time()
            try:
                views = await fleet.client.workers()
            except FleetError:
                views = []
            now = time.time()
            live = [v for v in views if v.healthy]
            self.slowest = max(self.slowest, now - asked)
            if len(live) < self.workers:
                self.missing += 1
            if live:
                self.worst = max(self.worst, now - min(v.last_seen for v in live))
            await asyncio.sleep(0.1)


def sizes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.exists())


def count_in(path: Path, text: str, since: int) -> int:
    with path.open("rb") as f:
        f.seek(since)
        return f.read().decode(errors="replace").count(text)


async def publish(fleet: Fleet, count: int) -> None:
    subjects = targets(Subjects(), fleet.names)
    payloads = junk()
    nc = await connect(fleet.logins.settings(fleet.url, "coordinator"), name="chaos-flood")
    try:
        for i in range(count):
            await nc.publish(subjects[i % len(subjects)], payloads[(i // 7) % len(payloads)])
            if i % CHUNK == CHUNK - 1:
                await nc.flush(timeout=30)
        await nc.flush(timeout=30)
    finally:
        await nc.close()


async def flood(scene: Scene) -> None:
    fleet, figures = scene.fleet, scene.figures
    coordinator_log, agent_logs = fleet.coordinator_log(), fleet.agent_logs()
    quiet = Probe(len(fleet.names))
    await probing(quiet, fleet, asyncio.sleep(2.0))
    log_before, agents_before = sizes([coordinator_log]), sizes(agent_logs)
    probe = Probe(len(fleet.names))
    per_round = max(1, scene.plan.flood // max(1, scene.plan.rounds))

    async def faults(s: Scene) -> None:
        for done in s.rounds():
            if not s.in_time(done):
                return
            await publish(fleet, per_round)
            await asyncio.sleep(0.5)
            s.figures.rounds = done + 1

    await probing(probe, fleet, flowing(scene, faults))
    await asyncio.sleep(1.0)  # what the coordinator still had queued is logged by now
    lost = count_in(coordinator_log, '"worker lost"', log_before)
    tracebacks = count_in(coordinator_log, "Traceback", log_before)
    m = figures.measures
    m["messages"] = str(per_round * figures.rounds)
    m["worst staleness, quiet / flood"] = f"{quiet.worst:.2f} s / {probe.worst:.2f} s"
    m["slowest `workers` answer, quiet / flood"] = f"{quiet.slowest:.2f} s / {probe.slowest:.2f} s"
    m["coordinator log during the flood"] = f"{sizes([coordinator_log]) - log_before:,} bytes"
    m["agents' logs during the flood"] = f"{sizes(agent_logs) - agents_before:,} bytes"
    m["tracebacks in the coordinator log"] = str(tracebacks)
    m["answers missing a worker"] = str(probe.missing)
    m["longest heartbeat gap seen outside, quiet / flood"] = (
        f"{quiet.beat_gap:.2f} s / {probe.beat_gap:.2f} s"
    )
    if lost:
        figures.problems.append(f"{lost} workers declared lost during the flood")


async def probing(probe: Probe, fleet: Fleet, during: Awaitable[None]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(probe.watch(fleet, stop))
    try:
        await during
    finally:
        stop.set()
        await task
