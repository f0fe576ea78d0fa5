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
    missing = task_missing(task, workers)
    if missing is not None:
        return missing
    answer = pool.check(catalog.request(state.node.request, task))
    return None if answer is None else f"{state.node.request.describe()}: {answer}"


def task_missing(task: str, workers: dict[str, WorkerInfo]) -> str | None:
    """Why no live worker can run ``task`` by name (before any resource is looked at), or
    None when one has it (or no worker is known at all: the pool says that better)."""
    if workers and not any(w.tasks is not None and task in w.tasks for w in workers.values()):
        return f"no live worker has task {task!r}{_untold(workers)}"
    return None


def _untold(workers: dict[str, WorkerInfo]) -> str:
    """Workers whose task set is not known are sent nothing until they register: say so,
    as they are the likely answer to "why is this infeasible?"."""
    untold = sum(w.tasks is None for w in workers.values())
    return f" ({untold} of {len(workers)} have not registered their tasks)" if untold else ""


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
    """After a worker joined or changed: clear what some worker now fits, and keep the
    reason of what none does current (a worker that told its tasks since, say)."""
    for run in runs:
        if run is None or run.status != "running":
            continue
        for node_id in list(run.infeasible):
            state = run.nodes[node_id]
            why = why_infeasible(state, workers, pool, catalog)
            if why is None:
                del run.infeasible[node_id]
                state.reason = ""
                run.changed.add(node_id)
            elif why != run.infeasible[node_id]:
                run.infeasible[node_id] = why
                state.reason = f"infeasible: {why}"
                run.changed.add(node_id)
        if not run.infeasible:
            run.infeasible_since = None
