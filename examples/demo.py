"""``make demo``: a live local fleet runs a DAG of the documented tasks; see where each landed.

Starts the three agents of ``examples/cluster.toml`` (a small CPU box, a big-memory box and
a box with one A100) with nats-server and a coordinator, exactly as
``fleet up --config examples/cluster.toml`` does, submits one DAG whose nodes ask for
different things (cores and RAM, a GPU model, a host label, the absence of one), prints
each node's changes as the coordinator pushes them, then where every node ran and the
outputs. Last, a task no agent could ever hold shows that such a run fails at once with
the reason, instead of waiting forever. Everything is stopped and the temporary state
directory removed at the end; it takes a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from taskiq_fleet import CoordinatorClient, Dag, LocalCluster, RunUpdate, RunView, load_config
from taskiq_fleet.demo.pipelines import node
from taskiq_fleet.demo.tasks import (
    background_cleanup,
    estimated_task,
    fetch_url,
    gpu_style_task,
    heavy_computation,
    memory_intensive,
    needs_gpu_host,
    train_model,
    whole_cluster_job,
)
from taskiq_fleet.tables import NONE, devices, duration, node_change, table
from taskiq_fleet.up_cli import agents_table

CONFIG = Path(__file__).with_name("cluster.toml")
NUMBERS = [3, 1, 4, 1, 5, 9, 2, 6]


def mixed() -> Dag:
    """Roots of every profile start together; ``cleanup`` and ``report`` wait for them."""
    return Dag(
        inputs=("numbers",),
        nodes=(
            node("train", train_model, kwargs={"epochs": 3}),  # 1 A100 or H100
            node("count", needs_gpu_host, inputs={"data": "numbers"}),  # label gpu=true
            node("square_sum", heavy_computation, inputs={"data": "numbers"}),  # 2 cpu, 4 GB
            node("distinct", memory_intensive, inputs={"data": "numbers"}),  # 2 GB
            node("peak", gpu_style_task, inputs={"data": "numbers"}),  # 4 cpu, 4 GB
            node("doubled", estimated_task, kwargs={"data": {"a": 1, "b": 2}}),
            node("quadrupled", estimated_task, inputs={"data": "doubled"}),
            node(
                "cleanup",
                background_cleanup,  # label gpu!=true: never on the GPU box
                kwargs={"path": "scratch/numbers"},
                after=("square_sum", "distinct", "peak"),
            ),
            node(
                "report",
                fetch_url,
                kwargs={"url": "https://example.org/report"},
                after=("train", "count", "quadrupled", "cleanup"),
            ),
        ),
    )


def placement(dag: Dag, run: RunView) -> str:
    """node -> worker -> GPU devices -> duration, with what each node asked for."""
    asked = {n.id: n.request.describe() for n in dag.nodes}
    rows = [
        [
            n.id,
            n.task.rpartition(":")[2],
            asked[n.id],
            n.worker or NONE,
            devices(n.gpu_devices),
            duration(n.duration),
        ]
        for n in run.nodes
    ]
    return table(("node", "task", "asks for", "worker", "gpus", "duration"), rows)


async def run_mixed(client: CoordinatorClient) -> RunView:
    dag = mixed()
    began = time.monotonic()
    seen: dict[str, str] = {}

    def on_update(update: RunUpdate) -> None:
        for changed in (*update.nodes, *(update.run.nodes if update.run else ())):
            if seen.get(changed.id) != changed.status:
                seen[changed.id] = changed.status
                print(f"{time.monotonic() - began:6.2f}s{node_change(changed)}", flush=True)

    handle = await client.submit(dag, {"numbers": NUMBERS}, name="demo", progress=True)
    handle.on_update(on_update)
    view = await handle.wait(timeout=30)
    print(f"\nrun {view.status} in {duration(time.monotonic() - began)}\n")
    print(placement(dag, view) + "\n")
    outputs = await client.outputs(view)
    print("outputs:")
    for name in (*dag.inputs, *(n.id for n in dag.nodes)):
        if name in outputs:
            print(f"  {name} = {json.dumps(outputs[name])}")
    return view


async def run_infeasible(client: CoordinatorClient) -> RunView:
    dag = Dag(inputs=(), nodes=(node("everything", whole_cluster_job, kwargs={"n": 1}),))
    handle = await client.submit(dag, name="too-big", progress=False)
    view = await handle.wait(timeout=30)
    print(f"\nA task asking for {dag.nodes[0].request.describe()}: no agent could ever hold it,")
    print(f"so the run ended at once ({view.status}) instead of waiting:")
    print(f"  {view.error}")
    return view


def _shown(path: Path) -> Path:
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


async def main() -> int:
    print(f"Starting a local fleet from {_shown(CONFIG)}...")
    async with LocalCluster(load_config(CONFIG), port=0) as cluster:
        print(f"NATS {cluster.nats_url}, state in {cluster.state_dir}\n")
        print(agents_table(cluster) + "\n")
        async with await CoordinatorClient.connect(cluster.nats_url) as client:
            print("Submitting a DAG of 9 nodes with mixed resource profiles:\n")
            view = await run_mixed(client)
            too_big = await run_infeasible(client)
        print("\nStopping the fleet (agents drain first)...")
    if cluster.clean:
        print("Stopped cleanly: no process left, temporary state directory removed.")
    else:
        print(f"Something had to be killed; logs kept in {cluster.state_dir}")
    return 0 if cluster.clean and view.status == "succeeded" and too_big.status == "failed" else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
