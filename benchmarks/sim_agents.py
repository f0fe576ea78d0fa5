"""Many simulated agents in one process: what 10,000 workers cost a coordinator.

Each simulated worker speaks the agent protocol as ``fleet agent`` does
(``worker_agent/service.py``), with the wire models of ``shared/wire``: a Register at the
start and whenever the coordinator asks, a Heartbeat every ``--interval`` seconds (the
workers' beats spread evenly over it), and for every assignment an Accept at once and
then, for a task it serves (``--tasks``), a successful Outcome stored in JetStream that
returns the task's first argument (or ``x``), as the benchmarks' ``noop`` does. It runs
nothing; a task it does not serve is rejected as ``unknown_task``.

``--probes`` more workers never register, so the coordinator answers each of their
heartbeats with a Reregister. The time from a probe's heartbeat to that answer is the
*heartbeat lag*: how long a heartbeat waits in the coordinator before its pump applies
it, plus two NATS hops. Figures go to ``--stats`` (JSON) every few seconds and at exit.

    python -m benchmarks.sim_agents --nats nats://127.0.0.1:4222 --workers 10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from benchmarks._workload import pct, positive
from shared.connection import NatsSettings, connect
from shared.jetstream import MSG_ID, ensure_streams
from shared.resources import WorkerSpec
from shared.wire.batches import decode_apart
from shared.wire.protocol import (
    Accept,
    Assignment,
    AttemptRef,
    Heartbeat,
    Outcome,
    Pace,
    ProtocolError,
    Register,
    Reject,
    decode_as,
    encode,
    encode_each,
    join_encoded,
    task_digest,
)
from shared.wire.subjects import SubjectError, Subjects

SEQ_MARK = 987654321987
"""A sequence number no real beat reaches: its digits are where each beat's number goes."""
FLUSH_EVERY = 0.005
STATS_EVERY = 2.0


def echo(a: Assignment) -> Any:
    """What ``noop(x)`` returns: its first argument, or its keyword ``x``."""
    return a.args[0] if a.args else a.kwargs.get("x")


@dataclass
class Sim:
    nc: Client
    subjects: Subjects
    workers: list[WorkerSpec]
    probes: list[WorkerSpec]
    interval: float
    tasks: tuple[str, ...]
    started_at: float = field(default_factory=time.time)
    counts: Counter[str] = field(default_factory=Counter)
    lags: list[float] = field(default_factory=list)
    _beats: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    _seq: Counter[str] = field(default_factory=Counter)
    _probe_sent: dict[str, float] = field(default_factory=dict)
    _running: dict[str, set[AttemptRef]] = field(default_factory=dict)
    _outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    _flush: asyncio.Event = field(default_factory=asyncio.Event)
    every: float = 0.0
    """The interval beats are sent at: ``interval``, or the coordinator's pace if longer."""

    def __post_init__(self) -> None:
        self.every = self.interval
        self._build_beats()

    def _build_beats(self) -> None:
        served = task_digest(self.tasks)
        unknown = task_digest(("a task set the coordinator was never told",))
        for spec in self.workers:
            self._beats[spec.name] = self._template(spec, served)
        for spec in self.probes:
            self._beats[spec.name] = self._template(spec, unknown)
        self._ours = {spec.name for spec in self.workers}
        self._probing = {spec.name for spec in self.probes}

    def _template(self, spec: WorkerSpec, digest: str) -> tuple[bytes, bytes]:
        """A worker's heartbeat as bytes around its sequence number (built once)."""
        beat = Heartbeat(
            worker=spec.name,
            started_at=self.started_at,
            seq=SEQ_MARK,
            interval=self.every,
            capacity=spec,
            cpu_percent=1.0,
            available_ram_mb=spec.ram_mb,
            tasks_digest=digest,
        )
        head, _, tail = encode(beat).partition(str(SEQ_MARK).encode())
        return head, tail

    # -- advertising ---------------------------------------------------------------------

    async def register(self, spec: WorkerSpec) -> None:
        msg = Register(
            spec=spec,
            agent_version="sim",
            pid=os.getpid(),
            started_at=self.started_at,
            heartbeat_interval=self.interval,
            tasks=self.tasks,
            running=tuple(self._running.get(spec.name, ())),
        )
        await self.nc.publish(self.subjects.register(spec.name), encode(msg))
        self.counts["registers"] += 1

    async def beat(self, name: str) -> None:
        self._seq[name] += 1
        running = self._running.get(name)
        if running:
            spec = next(s for s in self.workers if s.name == name)
            data = encode(
                Heartbeat(
                    worker=name,
                    started_at=self.started_at,
                    seq=self._seq[name],
                    interval=self.every,
                    capacity=spec,
                    cpu_percent=1.0,
                    available_ram_mb=spec.ram_mb,
                    running=tuple(running),
                    tasks_digest=task_digest(self.tasks),
                )
            )
        else:
            head, tail = self._beats[name]
            data = head + str(self._seq[name]).encode() + tail
        if name in self._probing:
            self._probe_sent[name] = time.perf_counter()
        await self.nc.publish(self.subjects.heartbeat(name), data)
        self.counts["heartbeats"] += 1

    async def heartbeats(self) -> None:
        """Every worker once per interval, the beats spread evenly over it (from the worker
        due next when the pace changes it)."""
        names = [s.name for s in self.workers + self.probes]
        start, sent, every = time.perf_counter(), 0, self.every
        while True:
            if every != self.every:
                start, sent, every = time.perf_counter(), sent % len(names), self.every
                start -= sent / len(names) * every
            due = int((time.perf_counter() - start) / every * len(names))
            while sent < due:
                await self.beat(names[sent % len(names)])
                sent += 1
            await asyncio.sleep(0.01)

    # -- answers -------------------------------------------------------------------------

    async def on_message(self, msg: Msg) -> None:
        try:
            worker, verb = self.subjects.parse_worker_inbox(msg.subject)
        except SubjectError:
            return
        if verb == "pace":
            with contextlib.suppress(ProtocolError):
                self.repace(decode_as(msg.data, Pace).interval)
        elif worker in self._probing and verb == "reregister":
            sent = self._probe_sent.pop(worker, None)
            if sent is not None:
                self.lags.append(time.perf_counter() - sent)
        elif worker in self._ours and verb == "reregister":
            await self.register(next(s for s in self.workers if s.name == worker))
        elif worker in self._ours and verb == "assign":
            with contextlib.suppress(ProtocolError):
                good, _ = decode_apart(msg.data, Assignment)
                await self.admit(worker, good)

    def repace(self, pace: float) -> None:
        """The coordinator sends each worker the pace; one changed value for all of them."""
        every = max(self.interval, pace)
        if every != self.every:
            self.every = every
            self._build_beats()
            self.counts["paced"] += 1

    async def admit(self, worker: str, assignments: list[Assignment]) -> None:
        answers: list[Accept | Reject] = []
        for a in assignments:
            self.counts["assigned"] += 1
            if a.task_name not in self.tasks:
                reason = f"this agent has no task named {a.task_name!r}"
                answers.append(Reject(ref=a.ref, worker=worker, code="unknown_task", reason=reason))
                continue
            answers.append(Accept(ref=a.ref, worker=worker))
            self._running.setdefault(worker, set()).add(a.ref)
            now = time.time()
            outcome = Outcome(
                ref=a.ref,
                worker=worker,
                status="succeeded",
                return_value=echo(a),
                started_at=now,
                finished_at=now,
            )
            self._outcomes.setdefault(worker, []).append(outcome)
        if answers:
            await self.nc.publish(self.subjects.ack(worker), encode_each(answers))
        self._flush.set()

    async def store_outcomes(self) -> None:
        """Each worker's outcomes as one JetStream message (as an agent's outbox stores
        them), retried until stored; a worker lists an attempt until then."""
        js = self.nc.jetstream()
        while True:
            await self._flush.wait()
            self._flush.clear()
            waiting, self._outcomes = self._outcomes, {}
            stored = await asyncio.gather(
                *(self._store(js, w, items) for w, items in waiting.items()),
                return_exceptions=True,
            )
            for (worker, items), result in zip(waiting.items(), stored, strict=True):
                if isinstance(result, BaseException):
                    self._outcomes.setdefault(worker, []).extend(items)
                    self._flush.set()
                    continue
                for outcome in items:
                    self._running[worker].discard(outcome.ref)
                self.counts["outcomes"] += len(items)
            await asyncio.sleep(FLUSH_EVERY)

    async def _store(self, js: Any, worker: str, items: list[Outcome]) -> None:
        if len(items) == 1:
            ref = items[0].ref
            subject = self.subjects.outcome(worker, ref.run_id, ref.node_id)
        else:
            subject = self.subjects.worker_outcomes(worker)
        data = join_encoded([encode(o) for o in items])
        await js.publish(subject, data, headers={MSG_ID: hashlib.sha1(data).hexdigest()})

    # -- figures -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        lags = [lag * 1000 for lag in self.lags]
        summary = {
            "n": len(lags),
            "p50": statistics.median(lags) if lags else None,
            "p99": pct(lags, 0.99) if lags else None,
            "max": max(lags) if lags else None,
        }
        return {
            "workers": len(self.workers),
            "probes": len(self.probes),
            "interval": self.interval,
            "beat_every": self.every,
            **self.counts,
            "heartbeat_lag_ms": summary,
            "heartbeat_lags_ms": [round(lag, 3) for lag in lags],
        }


def specs(prefix: str, n: int, cpus: float, ram_mb: int) -> list[WorkerSpec]:
    return [WorkerSpec(name=f"{prefix}{i}", cpu=cpus, ram_mb=ram_mb) for i in range(n)]


def _write(path: Path, figures: dict[str, Any]) -> None:
    path.write_text(json.dumps(figures))


async def write_stats(sim: Sim, path: Path | None) -> None:
    while True:
        await asyncio.sleep(STATS_EVERY)
        if path is not None:
            _write(path, sim.stats())


async def serve(args: argparse.Namespace) -> Sim:
    subjects = Subjects(args.prefix)
    nc = await connect(NatsSettings(servers=tuple(args.nats.split(","))), name="sim-agents")
    await ensure_streams(nc.jetstream(), subjects)
    sim = Sim(
        nc,
        subjects,
        specs(args.name, args.workers, args.cpus, args.ram_mb),
        specs(f"{args.name}probe", args.probes, args.cpus, args.ram_mb),
        args.interval,
        tuple(args.tasks.split(",")),
    )
    sub = await nc.subscribe(f"{args.prefix}.worker.*.*", cb=sim.on_message)
    for spec in sim.workers:
        await sim.register(spec)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loops = [sim.heartbeats(), sim.store_outcomes(), write_stats(sim, args.stats)]
    tasks = [asyncio.create_task(c) for c in loops]
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sub.unsubscribe()
        await nc.close()
    return sim


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--nats", required=True, help="server URLs, comma-separated")
    parser.add_argument("--prefix", default="fleet")
    parser.add_argument("--workers", type=positive, default=10_000)
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--interval", type=float, default=2.0, help="heartbeat seconds")
    parser.add_argument("--cpus", type=float, default=4.0)
    parser.add_argument("--ram-mb", type=int, default=16_384)
    parser.add_argument("--name", default="sim", help="worker names are NAME0, NAME1, ...")
    parser.add_argument("--tasks", default="sim_noop", help="task names served, comma-separated")
    parser.add_argument("--stats", type=Path, help="write the figures here (JSON)")
    args = parser.parse_args(argv)
    sim = asyncio.run(serve(args))
    if args.stats is not None:
        _write(args.stats, sim.stats())
    print(json.dumps(sim.stats()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
