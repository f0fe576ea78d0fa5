"""Answers to ``fleet workers`` / ``runs`` / ``status`` / ``cancel`` (core NATS request/reply).

Read-only questions are answered from the scheduler's memory and the run
store between pump iterations; a cancel is queued to the pump like any other
event, so the scheduler has one writer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from nats.aio.msg import Msg

from shared.wire.protocol import ProtocolError, decode_model, encode
from shared.wire.runs import CtlReply, CtlRequest, RunUpdate, RunView, WorkerView

if TYPE_CHECKING:
    from coordinator.scheduling.machine import Scheduler
    from coordinator.scheduling.state import NodeState
    from coordinator.service import Coordinator
    from coordinator.store import RunStore

log = structlog.get_logger(__name__)


class Control:
    def __init__(self, coordinator: Coordinator, store: RunStore) -> None:
        self._coordinator = coordinator
        self._store = store

    async def handle(self, msg: Msg) -> None:
        verb = msg.subject.rsplit(".", 1)[-1]
        try:
            request = decode_model(msg.data or b'{"type": "ctl"}', CtlRequest)
            reply = await self._answer(verb, request)
        except ProtocolError as exc:
            reply = CtlReply(ok=False, error=str(exc))
        if msg.reply:
            await msg.respond(encode(reply))

    async def _answer(self, verb: str, request: CtlRequest) -> CtlReply:
        if verb == "workers":
            return CtlReply(workers=tuple(self.workers()))
        if verb == "runs":
            return CtlReply(runs=tuple(await self.runs(request.limit)))
        if verb == "limit":
            self._coordinator.enqueue("limit", request.max_parallel)
            return CtlReply()
        run_id = request.run_id
        if not run_id:
            return CtlReply(ok=False, error=f"'{verb}' needs a run id")
        if verb == "status":
            view = await self.status(run_id)
            if view is None:
                return CtlReply(ok=False, error=f"no run {run_id!r}")
            return CtlReply(runs=(view,))
        if verb == "cancel":
            run = self._coordinator.scheduler.runs.get(run_id)
            if run is None or run.status != "running":
                known = await self.status(run_id)
                why = f"run {run_id!r} is {known.status}" if known else f"no run {run_id!r}"
                return CtlReply(ok=False, error=f"cannot cancel: {why}")
            self._coordinator.enqueue("cancel", (run_id, "cancelled on request"))
            return CtlReply()
        return CtlReply(ok=False, error=f"unknown control verb {verb!r}")

    def workers(self) -> list[WorkerView]:
        return worker_views(self._coordinator.scheduler)

    async def runs(self, limit: int) -> list[RunView]:
        sched = self._coordinator.scheduler
        live = [sched.view(r) for r in list(sched.runs)[-limit:]]
        done = await self._store.recent(max(0, limit - len(live)))
        return sorted(live + done, key=lambda v: v.submitted_at)

    async def status(self, run_id: str) -> RunView | None:
        sched = self._coordinator.scheduler
        if run_id in sched.runs:
            return sched.view(run_id)
        return await self._store.view(run_id)


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
    changed = [run.nodes[n] for n in run.changed]
    run.changed.clear()
    final = sched.view(run_id) if run.status != "running" else None
    if final is None and not run.submit.progress:
        return None, changed
    nodes = tuple(s.view() for s in changed) if run.submit.progress else ()
    return RunUpdate(run_id=run_id, status=run.status, nodes=nodes, run=final), changed
