"""Batching at the coordinator: ``@broker.task(batch=True, batch_size=..., batch_timeout=...)``.

Each ``.kiq(item, **other)`` is an ordinary durable submission. The coordinator groups
waiting items per task and per value of the other arguments, from every producer, and
runs each group as ONE node (placed and reserved once) when it is full or
``batch_timeout`` seconds after its first item. Every kiq gets its own element of the
result, also through ``Task(task_id)`` from any process, and a producer may exit right
after ``kiq``. ``python -m examples.batching_demo`` starts a local fleet (nats-server, a
coordinator, one agent serving this module), runs the maintainer's "hang" script from
taskiq PR #634 (400 items, batch size 60, timeout 3), a sync two-parameter task, and a
second producer process that exits right after its ``kiq``s.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from taskiq_fleet import AgentConfig, FleetBroker, LocalCluster, Task

APP = "examples.batching_demo:broker"
broker = FleetBroker()


@broker.task(batch=True, batch_size=60, batch_timeout=3, task_name="tfunc")
async def tfunc(test: list[int]) -> bool:
    print(len(test))
    return True


@broker.task(batch=True, batch_size=4, batch_timeout=0.5, task_name="scale")
def scale(items: list[int], factor: int) -> list[int]:
    """A sync function with a second parameter: batched per ``factor``; it returns one
    value per item, so each kiq gets its own element."""
    return [i * factor for i in items]


@broker.task(batch=True, batch_size=10, batch_timeout=1, task_name="offset")
def offset(items: list[int]) -> list[int]:
    return [i + 100 for i in items]


async def produce_and_exit(nats: str) -> None:
    """The second producer: two kiqs, their ids on stdout, and gone without shutdown."""
    broker.nats = nats
    await broker.startup()
    tasks = [await offset.kiq(1), await offset.kiq(2)]
    print(json.dumps([t.task_id for t in tasks]), flush=True)
    os._exit(0)


async def batches_of(task_ids: list[str]) -> set[str | None]:
    """The batch runs these kiqs ran in, from their own runs."""
    views = [await broker.connected().status(task_id) for task_id in task_ids]
    return {view.nodes[0].batch for view in views if view is not None}


async def main() -> int:
    agents = (AgentConfig(name="cpu", app=APP, cpus=2, ram_mb=2048),)
    async with LocalCluster(agents, port=0) as cluster:
        broker.nats = cluster.nats_url
        await broker.startup()
        try:
            started = time.monotonic()
            tasks = await asyncio.gather(*[tfunc.kiq(i) for i in range(400)])
            res = await asyncio.gather(*[task.wait_result(timeout=10) for task in tasks])
            runs = await batches_of([t.task_id for t in tasks])
            print(
                f"hang script: {len(res)} results, all ok={all(not r.is_err for r in res)}, "
                f"{len(runs)} batches, done in {time.monotonic() - started:.2f}s"
            )
            scaled = await asyncio.gather(
                *(scale.kiq(i, factor) for factor in (10, 100) for i in range(3))
            )
            values = [(await t.wait_result(timeout=10)).return_value for t in scaled]
            print(f"scale per factor -> {values}")
            other = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "examples.batching_demo", "--produce", cluster.nats_url,
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await other.communicate()
            ids = json.loads(out.decode().splitlines()[-1])
            found = [await Task(task_id, broker).wait_result(timeout=10) for task_id in ids]
            print(f"a producer that exited after kiq -> {[r.return_value for r in found]}")
        finally:
            await broker.shutdown()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--produce"]:
        asyncio.run(produce_and_exit(sys.argv[2]))
    raise SystemExit(asyncio.run(main()))
