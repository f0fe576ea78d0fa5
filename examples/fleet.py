"""The local fleet every example script runs on, and how they show where work ran.

``local_fleet(*agents)`` starts a nats-server, a coordinator and the given agents, each
its own process (``taskiq_fleet.local_cluster.LocalCluster`` on a free port), connects
the examples' broker to it and yields it; everything stops at the end. The agents
state their capacity, so placement is the same on any machine: the tasks are tiny.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from examples import flow_tasks
from taskiq_fleet import AgentConfig, FleetBroker, LocalCluster, RunView

APP = "examples.flow_tasks:broker"

CPU = AgentConfig(name="cpu", app=APP, cpus=2, ram_mb=2048, labels={"size": "small"})
"""A small CPU box."""
BIGMEM = AgentConfig(name="bigmem", app=APP, cpus=8, ram_mb=24576, labels={"memory": "high"})
"""A big-memory box."""
GPU = AgentConfig(
    name="gpu", app=APP, cpus=4, ram_mb=8192, gpus="1xL4:24576", labels={"gpu": "true"}
)
"""A box with one L4 GPU, stated by hand (no NVML needed)."""
ALL = (CPU, BIGMEM, GPU)

Scenario = Callable[[FleetBroker], Awaitable[None]]


@asynccontextmanager
async def local_fleet(*agents: AgentConfig) -> AsyncIterator[FleetBroker]:
    """A started ``flow_tasks.broker`` connected to a fresh local fleet of ``agents``."""
    broker = flow_tasks.broker
    async with LocalCluster(agents or (CPU,), port=0) as cluster:
        names = ", ".join(a.name for a in agents or (CPU,))
        print(f"[local fleet: nats-server, coordinator, agents {names}]\n")
        broker.nats = cluster.nats_url
        await broker.startup()
        try:
            # A new coordinator places nothing until its agents have reported for 1.5
            # heartbeats; one small task waits that out, so printed timings are the scenario's.
            await (await flow_tasks.add_one.kiq(0)).wait_result(timeout=30)
            yield broker
        finally:
            await broker.shutdown()
    if not cluster.clean:
        raise RuntimeError(f"the fleet did not stop cleanly; logs in {cluster.state_dir}")


def run(scenario: Scenario, agents: Sequence[AgentConfig]) -> None:
    """``python -m examples.NAME``: the scenario on its own fleet (an error exits non-zero)."""

    async def main() -> None:
        async with local_fleet(*agents) as broker:
            await scenario(broker)

    asyncio.run(main())


# -- where things ran ---------------------------------------------------------------------


async def run_view(broker: FleetBroker, run_id: str | None) -> RunView:
    """A run as the coordinator saw it: ``fleet status RUN``."""
    assert run_id is not None, "the pipeline has not run"
    view = await broker.connected().status(run_id)
    assert view is not None, run_id
    return view


def placement(view: RunView, indent: str = "  ") -> str:
    """One line per node: its id, the worker that ran it, its GPU devices, its attempts."""
    lines = []
    for node in view.nodes:
        name = node.task.rsplit(":", 1)[-1] if node.id == "task" else node.id  # a plain kiq
        gpus = f" (gpu {','.join(map(str, node.gpu_devices))})" if node.gpu_devices else ""
        tries = f", attempt {node.attempt}" if node.attempt > 1 else ""
        lines.append(f"{indent}{name:<20} ran on {node.worker}{gpus}{tries}")
    return "\n".join(lines)


def peak_parallelism(view: RunView) -> int:
    """The most nodes that ran at the same moment, from their start and end times."""
    events = sorted(
        (t, step)
        for n in view.nodes
        if n.started_at is not None and n.finished_at is not None
        for t, step in ((n.started_at, 1), (n.finished_at, -1))
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak
