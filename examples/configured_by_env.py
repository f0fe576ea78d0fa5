"""A deployed app's broker names no server: ``FLEET_NATS``, ``FLEET_PREFIX`` and the other
``FLEET_NATS_*`` / ``FLEET_TLS_*`` variables decide, as for every ``fleet`` command.

``python -m examples.configured_by_env`` starts a fleet on the subject prefix ``blue``, sets
the two variables as a deployment would, and goes through a ``CoordinatorClient`` and a
``FleetBroker()`` made without arguments. (Run out of habit, ``taskiq worker
examples.flow_tasks:broker`` stops at once, saying that the tasks run under ``fleet agent``.)
"""

from __future__ import annotations

import asyncio
import os

from examples import flow_tasks
from examples.fleet import CPU
from taskiq_fleet import CoordinatorClient, LocalCluster


async def main() -> None:
    async with LocalCluster((CPU,), port=0, prefix="blue") as cluster:
        os.environ["FLEET_NATS"] = cluster.nats_url
        os.environ["FLEET_PREFIX"] = "blue"
        print("FLEET_NATS=<the local nats-server> FLEET_PREFIX=blue")
        async with await CoordinatorClient.connect() as client:
            names = [w.spec.name for w in await client.wait_ready(1)]
            print(f"  CoordinatorClient.connect() sees the workers {names}")
        broker = flow_tasks.broker  # FleetBroker(), as flow_tasks.py declares it
        await broker.startup()
        try:
            result = await (await flow_tasks.add_one.kiq(41)).wait_result(timeout=30)
            print(f"  add_one.kiq(41) through FleetBroker() -> {result.return_value}")
        finally:
            await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
