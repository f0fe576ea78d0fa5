"""What the scheduler's state looks like from outside: worker rows and pushed run updates.

Pure reads of the scheduler, shared by the coordinator's NATS service and the
in-process fleet, so that both answer ``workers`` and push updates by one rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.wire.runs import RunUpdate, WorkerView

if TYPE_CHECKING:
    from coordinator.scheduling.machine import Scheduler
    from coordinator.scheduling.state import NodeState, RunState


def worker_views(sched: Scheduler) -> list[WorkerView]:
    """What ``fleet workers`` shows: each worker's totals, reserved and free capacity."""
    views = []
    for info in sched.workers.values():
        reserved: dict[str, float] = {}
        free: dict[str, float] = {}
        gpu_free: dict[int, float] = {}
        if not info.draining:
            u = sched.pool.usage(info.name)
            reserved = {"cpu": u.cpu_reserved, "ram_mb": float(u.ram_reserved_mb)}
            reserved |= {k: u.resources[k] - v for k, v in u.resources_free.items()}
            free = {"cpu": u.cpu_free, "ram_mb": float(u.ram_free_mb), **u.resources_free}
            gpu_free = {d.index: d.free for d in u.devices}
        views.append(
            WorkerView(
                spec=info.spec,
                reserved=reserved,
                free=free,
                gpu_free=gpu_free,
                healthy=True,
                draining=info.draining,
                last_seen=info.last_seen,
                running=len(info.attempts),
                cpu_percent=info.cpu_percent,
                available_ram_mb=info.available_ram_mb,
            )
        )
    return views


def take_update(sched: Scheduler, run_id: str) -> tuple[RunUpdate | None, list[NodeState]]:
    """What a run's submitter is pushed since the last call: the changed nodes when it
    asked for progress, and the run's end; ``None`` when there is nothing to push. Also
    the changed nodes themselves; the run's changed set is cleared. The coordinator and
    ``LocalFleet`` push the same updates through it."""
    run = sched.runs.get(run_id)
    if run is None:
        return None, []
    changed = [run.nodes[n] for n in _in_dag_order(run)]
    run.sent()
    final = sched.view(run_id) if run.status != "running" else None
    if final is None and not run.progress:
        return None, changed
    nodes = tuple(s.view() for s in changed) if run.progress else ()
    return RunUpdate(run_id=run_id, status=run.status, nodes=nodes, run=final), changed


def _in_dag_order(run: RunState) -> list[str]:
    """The changed nodes as the DAG lists them (several change in one pass when a chain is
    sent). One alone needs no order: a dormant one-node run is not read back for it."""
    if len(run.changed) < 2:
        return list(run.changed)
    return sorted(run.changed, key=run.submit.dag.position.__getitem__)
