"""The web dashboard on a local fleet: ``python -m examples.dashboard [--hold SECONDS]``.

Starts a local fleet with a dashboard, as ``fleet up`` does (extra ``dashboard``), runs a
DAG whose last node fails, and prints what the dashboard's API says about it and the URL
of its page: the DAG with each node's state and worker, the failed node's error and
traceback. ``--hold`` keeps everything up that long to look at it in a browser.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.request
from typing import Any

from taskiq_fleet import AgentConfig, CoordinatorClient, Dag, LocalCluster
from taskiq_fleet.demo.pipelines import node
from taskiq_fleet.demo.tasks import estimated_task, heavy_computation

APP = "taskiq_fleet.demo.tasks:broker"
AGENTS = (
    AgentConfig(name="cpu", app=APP, cpus=4, ram_mb=8192),
    AgentConfig(name="gpu", app=APP, cpus=4, ram_mb=8192, gpus="1xL4:24576"),
)


def api(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        found: dict[str, Any] = json.load(response)
    return found


async def main(hold: float) -> None:
    async with (
        LocalCluster(AGENTS, port=0, dashboard=True) as cluster,
        await CoordinatorClient.connect(cluster.nats_url) as client,
    ):
        page = cluster.dashboard_url
        if page is None:
            raise SystemExit("no dashboard: pip install 'taskiq-fleet[dashboard]'")
        dag = Dag(
            nodes=(
                node("prepare", estimated_task, kwargs={"data": {"rows": 3}}),
                node(
                    "train", heavy_computation, kwargs={"data": "not numbers"}, after=("prepare",)
                ),
            )
        )
        run = await client.submit(dag, name="dashboard-example")
        view = await run.wait(timeout=60)
        detail = (await asyncio.to_thread(api, f"{page}api/runs/{run.run_id}"))["run"]
        print(f"dashboard: {page}")
        print(f"run {run.run_id}: {view.status}, page {page}runs/{run.run_id}")
        for n in detail["nodes"]:
            error = f" ({n['error']['type']})" if n["error"] else ""
            print(f"  {n['id']:<8} {n['status']:<10} on {n['worker']}{error}")
        print(f"  edges: {detail['edges']}")
        if hold > 0:
            print(f"holding for {hold:g} s; Ctrl-C stops")
            await asyncio.sleep(hold)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=float, default=0.0, metavar="SECONDS")
    asyncio.run(main(parser.parse_args().hold))
