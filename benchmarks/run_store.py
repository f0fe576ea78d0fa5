"""``fleet runs`` against a large run store: time of the control reply, median of several.

A real nats-server (the project's pinned one) gets ``--sizes`` finished runs (final
records written through ``RunStore.save`` after a live record, as the coordinator writes
them, so deletes are in the stream too); a ``Control`` answers ``runs`` requests on core
NATS as the coordinator does, and the script times ``--repeat`` requests of ``--limit``
runs (plus, when the code has paging, the next page by its cursor)::

    .venv/bin/python -m benchmarks.run_store --sizes 10000,100000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import nats
from nats.aio.client import Client

from benchmarks._common import int_list
from coordinator.control import Control
from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.scheduling.machine import Scheduler, SchedulerConfig
from coordinator.store import RunStore
from shared.dag import Dag, Node
from shared.wire.protocol import decode_model, encode
from shared.wire.runs import CtlReply, CtlRequest, RunView, Submit
from shared.wire.subjects import Subjects
from taskiq_fleet.natsserver import NatsServer

WINDOW = 500


class Pump:
    def __init__(self) -> None:
        self.scheduler = Scheduler(ResourceAwareWorkerPool(), SchedulerConfig())
        self.subjects = Subjects()

    def enqueue(self, kind: str, payload: object) -> None:
        raise AssertionError("read-only benchmark")


async def fill(store: RunStore, start: int, count: int) -> None:
    dag = Dag(nodes=(Node(id="a", task="t"),))
    now = time.time()
    for lo in range(start, start + count, WINDOW):
        items = []
        for n in range(lo, min(lo + WINDOW, start + count)):
            run_id = f"run-{n:08d}"
            submit = Submit(run_id=run_id, dag=dag)
            items.append((submit, RunView(run_id=run_id, submitted_at=now + n), False))
            done = RunView(run_id=run_id, status="succeeded", submitted_at=now + n)
            items.append((submit, done.model_copy(update={"finished_at": now + n}), True))
        live = [i for i in items if not i[1].done]
        await store.save_many(live)
        await store.save_many([i for i in items if i[1].done])


async def ask(nc: Client, request: CtlRequest) -> tuple[float, CtlReply]:
    started = time.perf_counter()
    msg = await nc.request(Subjects().ctl("runs"), encode(request), timeout=60)
    return time.perf_counter() - started, decode_model(msg.data, CtlReply)


async def measure(nc: Client, limit: int, repeat: int) -> dict[str, float]:
    first, second = [], []
    for _ in range(repeat):
        took, reply = await ask(nc, CtlRequest(limit=limit))
        first.append(took)
        cursor = getattr(reply, "next_before", None)
        if cursor is not None:
            took, _ = await ask(nc, CtlRequest(limit=limit, before=cursor))
            second.append(took)
    result = {"first page ms": statistics.median(first) * 1000}
    if second:
        result["next page ms"] = statistics.median(second) * 1000
    return result


async def main(sizes: list[int], limit: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp)) as server:
        nc = await nats.connect(server.url)
        store = await RunStore.open(nc.jetstream(), Subjects())
        control = Control(Pump(), store)
        await nc.subscribe(Subjects().ctl("runs"), cb=control.handle)
        filled = 0
        for size in sorted(sizes):
            started = time.perf_counter()
            await fill(store, filled, size - filled)
            filled = size
            fill_s = time.perf_counter() - started
            result = await measure(nc, limit, repeat)
            cells = "  ".join(f"{k}={v:.1f}" for k, v in result.items())
            line = f"finished runs={size:>9,}  limit={limit}  {cells}  (fill {fill_s:.0f}s)"
            print(line, flush=True)
        await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int_list, default=[10_000, 100_000])
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main(args.sizes, args.limit, args.repeat))
