"""Follow a run from the command line: ``fleet submit --no-wait``, then ``fleet status RUN
--watch`` and ``fleet workers``, as a person types them against a fleet.

``python -m examples.watch_a_run`` starts a local fleet serving the demo tasks, submits
the demo DAG without waiting, and watches it. In a terminal the watch is a progress bar
redrawn in place (nodes done of total, and how many are in each state); piped (``| cat``)
it is a line per node change. Then the run's nodes, where each ran, and the workers,
in tables that fit the terminal. For Tab completion of every command and option:
``eval "$(fleet completion bash)"`` (or ``zsh``, ``fish``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from taskiq_fleet import AgentConfig, CoordinatorClient, LocalCluster

DEMO = AgentConfig(name="demo", app="taskiq_fleet.demo.tasks:broker", cpus=4, ram_mb=8192)
FLEET = [sys.executable, "-m", "taskiq_fleet"]


def fleet(*args: str, capture: bool = False) -> str:
    """One ``fleet`` command; its output goes to this terminal unless captured."""
    done = subprocess.run([*FLEET, *args], check=True, text=True, capture_output=capture)
    return done.stdout if capture else ""


async def main() -> None:
    async with LocalCluster((DEMO,), port=0) as cluster:
        url = cluster.nats_url
        async with await CoordinatorClient.connect(url) as client:
            await client.wait_ready(1)
        submitted = await asyncio.to_thread(
            fleet, "submit", "taskiq_fleet.demo.pipelines:chain", "--input",
            "numbers=[3, 1, 4, 1, 5]", "--no-wait", "--json", "--nats", url, capture=True,
        )  # fmt: skip
        run_id = json.loads(submitted)["run_id"]
        print(f"$ fleet status {run_id} --watch", flush=True)
        await asyncio.to_thread(fleet, "status", run_id, "--watch", "--nats", url)
        print("\n$ fleet workers", flush=True)
        await asyncio.to_thread(fleet, "workers", "--nats", url)


if __name__ == "__main__":
    asyncio.run(main())
