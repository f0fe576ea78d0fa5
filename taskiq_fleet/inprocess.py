"""``LocalFleet``: the coordinator's scheduler with in-process workers and no NATS.

Like taskiq's ``InMemoryBroker(await_inplace=True)``, for tests without a server, yet
through the same ``Scheduler`` (placement, retries, timeouts, limits, ``on_error``) and the
agent's ``TaskExecutor`` and ``CapacityGuard``. One pump in the running event loop feeds
every event to the scheduler and acts on its decisions; a timer runs only while a retry
delay or a run's deadline is pending.

Departures: values stay in memory (no payload stream, any size), still made JSON as on the
wire; nothing is persisted; the broker's ``startup()`` is left to the caller, as with
``InMemoryBroker``. Without ``workers`` the fleet is one worker, ``local``, with this host's
capacity as ``fleet agent`` detects it, so work asking for more is infeasible here too.
Close the fleet, or let its runs end, before its event loop ends.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

from pydantic import JsonValue
from pydantic_core import to_jsonable_python
from taskiq import AsyncBroker

from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.scheduling.machine import Decisions, Scheduler, SchedulerConfig
from coordinator.scheduling.views import take_update, worker_views
from shared.dag import Dag, RunOptions
from shared.resources import WorkerSpec
from shared.version import __version__
from shared.wire.protocol import Assignment, AttemptRef, ErrorInfo, Outcome, Register, Reject
from shared.wire.runs import RunUpdate, RunView, Submit, WorkerView
from shared.wire.subjects import token
from taskiq_fleet.handles import FleetError, PushedRun, run_failed
from worker_agent.executor import TaskExecutor
from worker_agent.guard import CapacityGuard, Refusal
from worker_agent.inventory import detect

__all__ = ["LocalFleet", "LocalRunHandle"]

logger = logging.getLogger(__name__)

HEARTBEAT = 1e9  # in-process workers cannot miss heartbeats: an interval no clock reaches
KEEP_VIEWS = 10_000  # finished runs whose final view ``status`` still answers


class LocalRunHandle(PushedRun):
    """One run on a ``LocalFleet``; the same surface as ``taskiq_fleet.client.RunHandle``."""

    __slots__ = ("fleet",)

    def __init__(self, fleet: LocalFleet, run_id: str) -> None:
        super().__init__(run_id)
        self.fleet = fleet

    async def wait(self, timeout: float | None = None) -> RunView:
        """The finished run; ``TimeoutError`` if it is still running after ``timeout``."""
        await asyncio.wait_for(self._done.wait(), timeout)
        assert self.view is not None
        return self.view

    async def result(self, timeout: float | None = None) -> dict[str, JsonValue]:
        """Every output of a succeeded run; ``RunFailed`` otherwise."""
        view = await self.wait(timeout)
        if view.status != "succeeded":
            raise run_failed(view)
        return dict(view.outputs)

    async def status(self) -> RunView:
        view = await self.fleet.status(self.run_id, missing_ok=True) or self.view
        assert view is not None
        return view

    async def cancel(self) -> None:
        await self.fleet.cancel(self.run_id)


class _Worker:
    def __init__(self, spec: WorkerSpec, broker: AsyncBroker) -> None:
        self.spec = spec
        self.guard = CapacityGuard(spec)
        self.executor = TaskExecutor(broker, worker=spec.name)


class LocalFleet:
    """Workers in this process, scheduled by the coordinator's ``Scheduler``."""

    def __init__(
        self,
        broker: AsyncBroker,
        workers: Sequence[WorkerSpec | Mapping[str, Any]] | None = None,
        *,
        policy: str | None = None,
        max_parallel: int | None = None,
    ) -> None:
        if workers is None:
            specs = [detect(name="local").spec]
        else:
            specs = [WorkerSpec.model_validate(w) for w in workers]
            if not specs:
                raise ValueError("a LocalFleet needs at least one worker")
        self._broker = broker
        self._scheduler = Scheduler(
            ResourceAwareWorkerPool(policy=policy), SchedulerConfig(max_parallel=max_parallel)
        )
        self._workers: dict[str, _Worker] = {}
        for index, spec in enumerate(specs):
            name = token(spec.name or f"worker-{index}")
            if name in self._workers:
                raise ValueError(f"worker name {name!r} is used twice")
            spec = spec.model_copy(update={"name": name})
            self._workers[name] = _Worker(spec, broker)
        self._handles: dict[str, LocalRunHandle] = {}
        self._followers: dict[str, LocalRunHandle] = {}
        self._views: OrderedDict[str, RunView] = OrderedDict()
        self._attempts: dict[AttemptRef, tuple[_Worker, asyncio.Task[None]]] = {}
        self._started: set[AttemptRef] = set()
        self._due: list[tuple[float, str]] = []  # (when, run): a retry delay or a deadline
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: frozenset[str] | None = None
        self._born = time.time()
        self._closed = False
        self._event(self._register)

    # -- the public surface --------------------------------------------------------------

    async def submit(
        self,
        dag: Dag,
        inputs: Mapping[str, Any] | None = None,
        *,
        name: str = "",
        options: RunOptions | None = None,
        run_id: str | None = None,
        progress: bool = True,
        **option_fields: Any,
    ) -> LocalRunHandle:
        """Validate (a bad DAG or missing input raises ValueError), then start the run.
        Inputs are converted to JSON as a client would (pydantic models become dicts)."""
        if self._closed:
            raise RuntimeError("this LocalFleet is closed")
        if options is not None and option_fields:
            raise ValueError(f"give either options or {sorted(option_fields)}, not both")
        run_id = run_id or uuid.uuid4().hex
        if run_id in self._handles:
            return self._handles[run_id]
        handle = self._followers.pop(run_id, None) or LocalRunHandle(self, run_id)
        if run_id in self._views:  # already ran: its end, as the coordinator would answer
            view = self._views[run_id]
            handle._apply(RunUpdate(run_id=run_id, status=view.status, run=view))
            return handle
        submit = Submit(
            run_id=run_id,
            name=name,
            dag=dag,
            inputs=to_jsonable_python(dict(inputs or {})),
            options=options or RunOptions(**option_fields),
            submitted_at=time.time(),
            progress=progress,
        )
        self._handles[run_id] = handle
        self._event(self._register)  # tasks defined since the last run become known
        self._event(lambda now: self._submit(submit, now))
        return handle

    async def submit_document(self, run_id: str, document: dict[str, Any]) -> LocalRunHandle:
        """A ``Submit`` given as JSON, as ``FleetBroker`` builds it for every ``kiq``."""
        options = document.get("options")
        return await self.submit(
            Dag.model_validate(document["dag"]),
            document.get("inputs"),
            name=str(document.get("name", "")),
            options=None if options is None else RunOptions.model_validate(options),
            run_id=run_id,
            progress=bool(document.get("progress", True)),
        )

    async def follow(self, run_id: str) -> LocalRunHandle:
        """A handle on a run of this fleet, also on one not submitted yet."""
        handle = self._handles.get(run_id)
        if handle is not None:
            return handle
        handle = LocalRunHandle(self, run_id)
        view = self._views.get(run_id)
        if view is None:  # not submitted yet: it ends when the run does, as on the cluster
            return self._followers.setdefault(run_id, handle)
        handle._apply(RunUpdate(run_id=run_id, status=view.status, run=view))
        return handle

    async def status(self, run_id: str, *, missing_ok: bool = False) -> RunView | None:
        """As the coordinator answers: ``FleetError`` for an unknown run unless
        ``missing_ok``, then ``None``."""
        if run_id in self._scheduler.runs:
            return self._scheduler.view(run_id)
        view = self._views.get(run_id)
        if view is None and not missing_ok:
            raise FleetError(f"no run {run_id!r}")
        return view

    async def outputs(self, view: RunView) -> dict[str, JsonValue]:
        """Values stay in memory here: nothing to fetch."""
        return dict(view.outputs)

    async def set_max_parallel(self, limit: int | None) -> None:
        """As ``fleet``'s ``limit`` verb: the global cap on attempts in flight."""
        self.apply_max_parallel(limit)

    def apply_max_parallel(self, limit: int | None) -> None:
        """``set_max_parallel`` from synchronous code (``set_max_parallel_tasks``)."""
        self._scheduler.set_max_parallel(limit)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # the next event in the fleet's loop places under the new cap
        self._event(lambda now: None)

    def flush_batches(self) -> None:
        """Run every waiting batch now, however few members it has (``wait_all``)."""
        self._event(self._scheduler.flush_batches)

    async def wait_all(self) -> None:
        """Until every run submitted so far has ended; waiting batches run at once, as
        taskiq's ``InMemoryBroker.wait_all`` flushes them (taskiq PR #634)."""
        while self._handles:
            self.flush_batches()
            await asyncio.gather(*(h.wait() for h in list(self._handles.values())))

    async def cancel(self, run_id: str) -> None:
        """As ``fleet cancel``: ``FleetError`` for an unknown run or one that has ended."""
        run = self._scheduler.runs.get(run_id)
        if run is None or run.status != "running":
            known = self._views.get(run_id)
            why = f"run {run_id!r} is {known.status}" if known else f"no run {run_id!r}"
            raise FleetError(f"cannot cancel: {why}")
        self._event(lambda now: self._scheduler.cancel_run(run_id, "cancelled on request", now))

    async def workers(self) -> list[WorkerView]:
        """What ``fleet workers`` shows: each worker's totals, reserved and free capacity."""
        return worker_views(self._scheduler)

    async def close(self) -> None:
        """Cancel every run still going, stop their attempts, release the thread pools."""
        if self._closed:
            return
        self._closed = True
        live = [r for r, run in self._scheduler.runs.items() if run.status == "running"]
        self._event(
            lambda now: [self._scheduler.cancel_run(r, "the local fleet closed", now) for r in live]
        )
        await asyncio.gather(*(task for _, task in self._attempts.values()), return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
        for worker in self._workers.values():
            worker.executor.close()
        await asyncio.sleep(0)  # let the final updates reach their handles

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the pump ------------------------------------------------------------------------

    def _event(self, apply: Callable[[float], object]) -> None:
        """Apply one event, then act on decisions until the scheduler has none left."""
        now = time.time()
        apply(now)
        while True:
            self._scheduler.tick(now)
            decisions = self._scheduler.take()
            if not decisions:
                break
            self._act(decisions, now)
        self._arm(now)

    def _act(self, d: Decisions, now: float) -> None:
        for cancels in d.cancel.values():
            for ref, reason in cancels:
                self._cancel_attempt(ref, reason)
        for name, assignments in d.assign.items():
            for assignment in assignments:
                self._admit(self._workers[name], assignment, now)
        for run_id in d.changed:
            self._push(run_id, now)
        for run_id in d.finished:  # its final view was kept by _push
            self._handles.pop(run_id, None)
            self._scheduler.forget(run_id)
        while len(self._views) > KEEP_VIEWS:
            self._views.popitem(last=False)

    def _register(self, now: float) -> None:
        tasks = frozenset(self._broker.get_all_tasks())
        if tasks == self._tasks:
            return
        self._tasks = tasks
        for worker in self._workers.values():
            msg = Register(
                spec=worker.spec,
                agent_version=__version__,
                pid=os.getpid(),
                started_at=self._born,
                heartbeat_interval=HEARTBEAT,
                tasks=tuple(sorted(tasks)),
            )
            self._scheduler.register(msg, now)

    def _submit(self, submit: Submit, now: float) -> None:
        self._scheduler.submit(submit, now)
        if submit.options.timeout is not None:
            heapq.heappush(self._due, (now + submit.options.timeout, submit.run_id))

    def _admit(self, worker: _Worker, a: Assignment, now: float) -> None:
        """The agent's admission: unknown task or no room is a Reject, else it starts."""
        refusal = (
            worker.guard.admit(a)
            if worker.executor.has_task(a.task_name)
            else Refusal("unknown_task", f"this agent has no task named {a.task_name!r}")
        )
        if refusal is not None:
            name, code, reason = worker.spec.name, refusal.code, refusal.reason
            self._scheduler.rejected(Reject(ref=a.ref, worker=name, code=code, reason=reason), now)
            return
        self._scheduler.accepted(a.ref, now)
        task = asyncio.get_running_loop().create_task(self._run(worker, a))
        self._attempts[a.ref] = (worker, task)
        task.add_done_callback(lambda _: self._release(worker, a.ref))

    async def _run(self, worker: _Worker, a: Assignment) -> None:
        self._started.add(a.ref)
        started = time.time()
        try:
            outcome = await worker.executor.run(a)
        except Exception as exc:  # it could not run at all (e.g. the task disappeared)
            error = ErrorInfo(type=type(exc).__name__, message=str(exc))
            end = max(started, time.time())
            outcome = Outcome(
                ref=a.ref,
                worker=worker.spec.name,
                status="failed",
                error=error,
                started_at=started,
                finished_at=end,
            )
        self._release(worker, a.ref)  # before the outcome frees the pool for new work
        self._event(lambda now: self._scheduler.outcome(outcome, now))

    def _release(self, worker: _Worker, ref: AttemptRef) -> None:
        worker.guard.release(ref)
        self._attempts.pop(ref, None)
        self._started.discard(ref)

    def _cancel_attempt(self, ref: AttemptRef, reason: str) -> None:
        found = self._attempts.get(ref)
        if found is None:
            return
        worker, task = found
        if not worker.executor.cancel(ref, reason) and ref not in self._started:
            task.cancel()  # not started yet: it never runs (the done callback releases)

    def _push(self, run_id: str, now: float) -> None:
        """Changed nodes to the handle (when it wants progress), and the run's end."""
        update, changed = take_update(self._scheduler, run_id)
        for state in changed:  # a retry waiting out its delay needs a tick then
            if state.status == "ready" and state.not_before > now:
                heapq.heappush(self._due, (state.not_before, run_id))
        if update is not None and update.run is not None:
            self._views[run_id] = update.run
        handle = self._handles.get(run_id)
        if handle is not None and update is not None:
            # One loop step later and in order, as a push would arrive: a listener added
            # right after ``submit`` returns sees the run from its first change.
            asyncio.get_running_loop().call_soon(handle._apply, update)

    # -- time ----------------------------------------------------------------------------

    def _arm(self, now: float) -> None:
        """A timer for the next retry delay or deadline of a live run, or batch due to be
        formed; none when idle."""
        due, runs = self._due, self._scheduler.runs
        while due and (due[0][0] <= now or getattr(runs.get(due[0][1]), "status", "") != "running"):
            heapq.heappop(due)  # handled by this event's tick, or its run has ended
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        times = [due[0][0]] if due else []
        batch = self._scheduler.batch_deadline()
        times += [] if batch is None else [batch]
        if times:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, min(times) - now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._event(lambda now: None)
