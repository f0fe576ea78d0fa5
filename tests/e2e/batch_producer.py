"""A producer process for the batching tests: ``kiq``s items of one batched task of
``tests.e2e.batch_app`` on a fleet, prints their task ids as one JSON line, and exits.

``python -m tests.e2e.batch_producer NATS TASK ITEM... [--exit-now]``; with
``--exit-now`` it ends right after the last ``kiq`` returned, without ``shutdown()``,
as a process that is killed or simply returns would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from tests.e2e import batch_app


async def produce(nats: str, task_name: str, items: list[int], exit_now: bool) -> None:
    broker = batch_app.broker
    broker.nats = nats
    await broker.startup()
    task = broker.find_task(task_name) or broker.find_task(f"tests.e2e.batch_app:{task_name}")
    if task is None:
        raise SystemExit(f"no task {task_name!r} in tests.e2e.batch_app")
    kicked = await asyncio.gather(*(task.kiq(item) for item in items))
    print(json.dumps([t.task_id for t in kicked]), flush=True)
    if exit_now:
        os._exit(0)
    await broker.shutdown()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="batch_producer")
    parser.add_argument("nats")
    parser.add_argument("task")
    parser.add_argument("items", type=int, nargs="+")
    parser.add_argument("--exit-now", action="store_true")
    args = parser.parse_args(argv)
    asyncio.run(produce(args.nats, args.task, args.items, args.exit_now))


if __name__ == "__main__":
    main(sys.argv[1:])
