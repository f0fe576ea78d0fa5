"""Custom resources: countable things only some hosts have (licenses, FPGAs, seats).

``python -m examples.custom_resources`` starts two agents: ``cpu`` (2 cores) and
``licensed`` (4 cores and two licenses of a solver: ``fleet agent --resources licenses=2``,
or ``resources = { licenses = 2 }`` in ``fleet up``'s config). Then:

1. six ``solve`` calls, each ``@ResourceProfile(resources={"licenses": 1})``, run only on
   ``licensed``, at most two at a time, though ``cpu`` has room for them;
2. ``solve_together`` asks for three licenses: no agent could ever hold it, so it fails at
   once as infeasible, with the reason, instead of waiting.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from examples import fleet
from examples.flow_tasks import broker
from taskiq_fleet import AgentConfig, FleetBroker, ResourceProfile

APP = "examples.custom_resources:broker"
"""The examples' broker, with this module's tasks registered on it."""
LICENSED = AgentConfig(name="licensed", app=APP, cpus=4, ram_mb=4096, resources={"licenses": 2})
AGENTS = (replace(fleet.CPU, app=APP), LICENSED)


# Named explicitly: run as a script this module is ``__main__``, on the agents it is not.
@broker.task(task_name="solve")
@ResourceProfile(resources={"licenses": 1})
async def solve(problem: int) -> int:
    await asyncio.sleep(0.2)  # holds its license a moment, so the cap shows
    return problem * problem


@broker.task(task_name="solve_together")
@ResourceProfile(resources={"licenses": 3})
async def solve_together(problems: list[int]) -> int:
    return sum(problems)


async def scenario(broker: FleetBroker) -> None:
    print("six solve.kiq(n), each asking for one license:")
    tasks = [await solve.kiq(n) for n in range(6)]
    results = [await task.wait_result(timeout=30) for task in tasks]
    print(f"  -> {[r.return_value for r in results]}")
    views = [await fleet.run_view(broker, task.task_id) for task in tasks]
    nodes = [view.nodes[0] for view in views]
    print(f"  ran on {sorted({n.worker or '-' for n in nodes})}")
    spans = [(n.started_at or 0.0, n.finished_at or 0.0) for n in nodes]
    peak = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    print(f"  at most {peak} at a time (the agent offers 2 licenses)")

    print("\nsolve_together.kiq(...), asking for three licenses:")
    result = await (await solve_together.kiq([1, 2, 3])).wait_result(timeout=30)
    print(f"  is_err={result.is_err}: {result.error}")


if __name__ == "__main__":
    fleet.run(scenario, AGENTS)
