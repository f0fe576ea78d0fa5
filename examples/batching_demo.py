"""Client-side batching: ``@broker.task(batch=True, batch_size=..., batch_timeout=...)``.

Each ``.kiq(item, **other)`` queues one item; items are grouped per task and per value of
the other arguments, and each group runs as ONE node (one run, resources reserved once)
when it is full, ``batch_timeout`` seconds after its first item, or at shutdown. Every
kiq still gets its own result. ``python -m examples.batching_demo`` starts a local fleet
(nats-server, a coordinator, one agent serving this module) and runs the maintainer's
"hang" script from taskiq PR #634: 400 items, batch size 60, timeout 3.
"""

from __future__ import annotations

import asyncio
import time

from taskiq_fleet import AgentConfig, FleetBroker, LocalCluster

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


async def main() -> int:
    agents = (AgentConfig(name="cpu", app=APP, cpus=2, ram_mb=2048),)
    async with LocalCluster(agents, port=0) as cluster:
        broker.nats = cluster.nats_url
        await broker.startup()
        try:
            started = time.monotonic()
            tasks = await asyncio.gather(*[tfunc.kiq(i) for i in range(400)])
            queued = time.monotonic() - started
            res = await asyncio.gather(*[task.wait_result(timeout=10) for task in tasks])
            runs = {broker.batches.run_of(t.task_id)[0] for t in tasks}  # type: ignore[index]
            print(
                f"hang script: {len(res)} results, all ok={all(not r.is_err for r in res)}, "
                f"{len(runs)} runs, queued in {queued:.2f}s, done in "
                f"{time.monotonic() - started:.2f}s"
            )
            scaled = await asyncio.gather(
                *(scale.kiq(i, factor) for factor in (10, 100) for i in range(3))
            )
            values = [(await t.wait_result(timeout=10)).return_value for t in scaled]
            print(f"scale per factor -> {values}")
        finally:
            await broker.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
