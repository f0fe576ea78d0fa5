"""Coming from taskiq-nats: the app's tasks run on the fleet unchanged, and submission
moves there by changing the broker line.

``python -m examples.from_taskiq_nats`` starts a local fleet whose agents serve
``examples.taskiq_nats_tasks:broker``, the app as written for taskiq-nats (a
``PullBasedJetStreamBroker``), then submits through ``taskiq_nats_moved``, the same module
with ``FleetBroker`` in the broker line. ``resize`` asks for 2 cores and 4 GB, so it lands
on the big-memory agent; the agents never connect to the NATS the app names.
"""

from __future__ import annotations

import asyncio

from examples import fleet, taskiq_nats_moved
from taskiq_fleet import AgentConfig, LocalCluster

APP = "examples.taskiq_nats_tasks:broker"
AGENTS = (
    AgentConfig(name="cpu", app=APP, cpus=2, ram_mb=2048),
    AgentConfig(name="bigmem", app=APP, cpus=8, ram_mb=24576),
)


async def main() -> None:
    broker = taskiq_nats_moved.broker
    async with LocalCluster(AGENTS, port=0) as cluster:
        print(f"[local fleet: agents cpu, bigmem serving {APP}]\n")
        broker.nats = cluster.nats_url
        await broker.startup()
        try:
            resize = await taskiq_nats_moved.resize.kiq("cat.png", 64)
            print(
                f"resize('cat.png', 64) -> {(await resize.wait_result(timeout=30)).return_value!r}"
            )
            print(fleet.placement(await fleet.run_view(broker, resize.task_id)))
            words = await taskiq_nats_moved.count_words.kiq("to be or not to be")
            print(
                f"count_words('to be or not to be') -> {(await words.wait_result()).return_value}"
            )
            print(fleet.placement(await fleet.run_view(broker, words.task_id)))
        finally:
            await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
