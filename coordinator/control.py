"""Answers to ``fleet workers`` / ``runs`` / ``status`` / ``cancel`` (core NATS request/reply).

Read-only questions are answered from the scheduler's memory and the run
store between pump iterations; a cancel is queued to the pump like any other
event, so the scheduler has one writer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import structlog
from nats.aio.msg import Msg

from coordinator.scheduling.views import worker_views
from shared.wire.protocol import ProtocolError, decode_model, encode
from shared.wire.runs import CoordinatorView, CtlReply, CtlRequest, RunView, WorkerView
from shared.wire.subjects import SubjectError, Subjects

if TYPE_CHECKING:
    from coordinator.scheduling.machine import Scheduler
    from coordinator.store import RunStore


class Pump(Protocol):
    """The part of the service a control request needs: its scheduler, read between
    pump iterations, and the queue through which every change goes."""

    @property
    def scheduler(self) -> Scheduler: ...

    @property
    def subjects(self) -> Subjects: ...

    def enqueue(self, kind: str, payload: Any) -> None: ...

    def coordinators(self) -> list[CoordinatorView]: ...


log = structlog.get_logger(__name__)


class Control:
    def __init__(self, coordinator: Pump, store: RunStore) -> None:
        self._coordinator = coordinator
        self._store = store

    async def handle(self, msg: Msg) -> None:
        try:
            verb = self._coordinator.subjects.parse_ctl(msg.subject)
        except SubjectError as exc:
            reply = CtlReply(ok=False, error=str(exc))
        else:
            reply = await self._reply(verb, msg.data)
        if msg.reply:
            await msg.respond(encode(reply))

    async def _reply(self, verb: str, data: bytes) -> CtlReply:
        try:
            request = decode_model(data or b'{"type": "ctl"}', CtlRequest)
        except ProtocolError as exc:
            return CtlReply(ok=False, error=str(exc))
        return await self._answer(verb, request)

    async def _answer(self, verb: str, request: CtlRequest) -> CtlReply:
        if verb == "workers":
            coordinators = tuple(self._coordinator.coordinators())
            return CtlReply(workers=tuple(self.workers()), coordinators=coordinators)
        if verb == "runs":
            runs, cursor = await self.runs(request.limit, request.before)
            return CtlReply(runs=tuple(runs), next_before=cursor)
        if verb == "limit":
            if "max_parallel" not in request.model_fields_set:  # an empty message is no "remove"
                return CtlReply(ok=False, error="'limit' needs max_parallel (a number, or null)")
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

    async def runs(self, limit: int, before: int | None = None) -> tuple[list[RunView], int | None]:
        """The runs in memory (first page only) and the newest finished ones before the
        cursor, oldest first, with the cursor of the next page."""
        sched = self._coordinator.scheduler
        live = [] if before is not None else [sched.view(r) for r in list(sched.runs)[-limit:]]
        held = {v.run_id for v in live}
        done, cursor = await self._store.recent_page(max(0, limit - len(live)), before)
        done = [v for v in done if v.run_id not in held]
        return sorted(live + done, key=lambda v: v.submitted_at), cursor

    async def status(self, run_id: str) -> RunView | None:
        sched = self._coordinator.scheduler
        if run_id in sched.runs:
            return sched.view(run_id)
        return await self._store.view(run_id)
