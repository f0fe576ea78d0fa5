"""Whether any worker could ever run a node: pure reads of the pool and the workers.

A node no worker fits (too big, a task nobody has) would wait forever; the scheduler
asks here at submit, when a placement says so, and again when workers change.
"""

from __future__ import annotations

from collections.abc import Iterable

from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.scheduling.state import NodeState, RunState, WorkerInfo
from coordinator.scheduling.tasks import TaskCatalog


def why_infeasible(
    state: NodeState,
    workers: dict[str, WorkerInfo],
    pool: ResourceAwareWorkerPool,
    catalog: TaskCatalog,
) -> str | None:
    """None when some worker could run the node once free; else why none can."""
    task = state.node.task
    if workers and not any(w.tasks is None or task in w.tasks for w in workers.values()):
        return f"no worker has task {task!r}"
    answer = pool.check(catalog.request(state.node.request, task))
    return None if answer is None else f"{state.node.request.describe()}: {answer}"


def mark(run: RunState, state: NodeState, why: str, now: float) -> bool:
    """Note the node as infeasible; True when that starts the run's grace."""
    state.reason = f"infeasible: {why}"
    run.infeasible[state.id] = why
    run.changed.add(state.id)
    if run.infeasible_since is None:
        run.infeasible_since = now
        return True
    return False


def recheck(
    runs: Iterable[RunState | None],
    workers: dict[str, WorkerInfo],
    pool: ResourceAwareWorkerPool,
    catalog: TaskCatalog,
) -> None:
    """After a worker joined or changed: clear what some worker now fits."""
    for run in runs:
        if run is None or run.status != "running":
            continue
        for node_id in list(run.infeasible):
            state = run.nodes[node_id]
            if why_infeasible(state, workers, pool, catalog) is None:
                del run.infeasible[node_id]
                state.reason = ""
                run.changed.add(node_id)
        if not run.infeasible:
            run.infeasible_since = None
