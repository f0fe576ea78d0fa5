"""What the dashboard knows, and how it learns it: from what the fleet already publishes.

At start it asks the coordinator (``workers`` and ``runs``, the control requests the CLI
uses). After that it listens: agents' heartbeats (every worker's reservations and live
usage, every couple of seconds), registrations and departures, the run updates the
coordinator pushes (a run's end on ``<prefix>.run.<run>``, node changes to submitters'
inboxes). Each change goes to every open page as an event (``listen``), so a page updates
when the fleet does, and nothing asks the coordinator on a timer. Heartbeats are gathered
for ``COALESCE`` seconds and sent as one event, so a thousand workers cost a page a
message a second, not five hundred.

The dashboard only reads: it needs no permission to publish anywhere but the read-only
control verbs (``deploy/nats/accounts.conf``, user ``dashboard``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shared.wire.protocol import Heartbeat, ProtocolError, decode_model
from shared.wire.runs import CoordinatorView, RunUpdate, RunView
from taskiq_fleet.client import CoordinatorClient
from taskiq_fleet.dashboard import shapes
from taskiq_fleet.handles import FleetError

log = structlog.get_logger(__name__)

KEEP_RUNS = 2000
"""Runs kept in memory for the runs page (the newest); older ones are asked for by id."""
COALESCE = 0.5
"""Seconds over which changed workers are gathered into one event."""
LISTENER_BACKLOG = 1000
"""Events a slow page may fall behind by before it is dropped (its browser reconnects)."""
Event = dict[str, Any]


class Feed:
    """The fleet as the pages see it, kept current from NATS."""

    def __init__(self, client: CoordinatorClient, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.clock = clock
        self.workers: dict[str, shapes.Json] = {}
        self.coordinators: list[CoordinatorView] = []
        self.runs: OrderedDict[str, RunView] = OrderedDict()
        self._listeners: set[asyncio.Queue[str | None]] = set()
        self._subs: list[Subscription] = []
        self._changed: set[str] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._asking: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen first, then ask: nothing that changes meanwhile is missed."""
        s, nc = self.client.subjects, self.client.nc
        self._subs = [
            await nc.subscribe(s.all_run_updates, cb=self._on_update),
            await nc.subscribe(s.all_client_inboxes, cb=self._on_update),
            await nc.subscribe(s.all_heartbeats, cb=self._on_heartbeat),
            await nc.subscribe(s.all_registers, cb=self._on_membership),
            await nc.subscribe(s.all_deregisters, cb=self._on_departure),
        ]
        with contextlib.suppress(FleetError):
            await self.refresh_workers()
            await self.refresh_runs()

    async def close(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if self._flush is not None:
            self._flush.cancel()
        for task in list(self._tasks):
            task.cancel()
        for queue in list(self._listeners):
            queue.put_nowait(None)

    # -- pages -------------------------------------------------------------------------------

    def listen(self) -> asyncio.Queue[str | None]:
        """A page's events, as JSON text; ``None`` ends them."""
        queue: asyncio.Queue[str | None] = asyncio.Queue(LISTENER_BACKLOG)
        self._listeners.add(queue)
        return queue

    def forget(self, queue: asyncio.Queue[str | None]) -> None:
        self._listeners.discard(queue)

    def _send(self, event: Event) -> None:
        text = json.dumps({**event, "now": self.clock()})
        for queue in list(self._listeners):
            try:
                queue.put_nowait(text)
            except asyncio.QueueFull:  # a page that cannot keep up starts again
                self._listeners.discard(queue)
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(None)

    # -- asking the coordinator --------------------------------------------------------------

    async def refresh_workers(self) -> None:
        views = await self.client.workers()
        self.coordinators = await self.client.coordinators()
        intervals = {n: w["interval"] for n, w in self.workers.items()}
        self.workers = {
            w.spec.name: shapes.row_of_view(w, intervals.get(w.spec.name, shapes.DEFAULT_INTERVAL))
            for w in views
        }
        self._send({"type": "fleet", "workers": list(self.workers.values())})

    async def refresh_runs(self, limit: int = 500) -> list[RunView]:
        """The runs the coordinator holds and the newest finished ones; the running ones
        carry each waiting node's last answer from the pool."""
        found = await self.client.runs(limit)
        for view in found:
            self._keep(view)
        return list(found)

    async def run(self, run_id: str) -> RunView | None:
        """A run's latest view: an ended one from memory, else from the coordinator."""
        known = self.runs.get(run_id)
        if known is not None and known.done and known.nodes:
            return known
        view = await self.client.status(run_id, missing_ok=True)
        if view is not None:
            self._keep(view)
        return view or known

    def _keep(self, view: RunView) -> None:
        self.runs[view.run_id] = view
        self.runs.move_to_end(view.run_id)
        while len(self.runs) > KEEP_RUNS:
            self.runs.popitem(last=False)

    # -- what the fleet publishes ------------------------------------------------------------

    async def _on_update(self, msg: Msg) -> None:
        try:
            update = decode_model(msg.data, RunUpdate)
        except ProtocolError:
            return
        if update.run is not None:
            self._keep(update.run)
            self._send_run(update.run, update.run.nodes)
            return
        known = self.runs.get(update.run_id)
        if known is None:
            self._ask_later(update.run_id)
            return
        changed = {n.id: n for n in update.nodes}
        nodes = tuple(changed.get(n.id, n) for n in known.nodes)
        view = known.model_copy(update={"status": update.status, "nodes": nodes})
        self._keep(view)
        self._send_run(view, update.nodes)

    def _send_run(self, view: RunView, nodes: tuple[Any, ...]) -> None:
        self._send(
            {
                "type": "run",
                "run": shapes.run_summary(view),
                "nodes": [shapes.node_json(n) for n in nodes],
            }
        )

    def _ask_later(self, run_id: str) -> None:
        """A run first heard of by a node change: its whole view, asked once."""
        if run_id in self._asking:
            return
        self._asking.add(run_id)
        self._spawn(self._ask(run_id))

    async def _ask(self, run_id: str) -> None:
        try:
            view = await self.client.status(run_id, missing_ok=True)
        except FleetError:
            view = None
        finally:
            self._asking.discard(run_id)
        if view is not None:
            self._keep(view)
            self._send_run(view, view.nodes)

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = decode_model(msg.data, Heartbeat)
        except ProtocolError:
            return
        self.workers[beat.worker] = shapes.row_of_heartbeat(beat, self.clock())
        self._changed.add(beat.worker)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(COALESCE, self._flush_workers)

    def _flush_workers(self) -> None:
        self._flush = None
        rows = [self.workers[n] for n in sorted(self._changed) if n in self.workers]
        self._changed.clear()
        if rows:
            self._send({"type": "workers", "workers": rows})

    async def _on_membership(self, msg: Msg) -> None:
        """A worker (re)registered: the coordinator's books say what it offers."""
        self._spawn(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh_workers()
        except FleetError as exc:
            log.warning("could not ask the coordinator for its workers", error=str(exc))

    async def _on_departure(self, msg: Msg) -> None:
        try:
            worker = self.client.subjects.parse_deregister(msg.subject)
        except ValueError:
            return
        if self.workers.pop(worker, None) is not None:
            self._send({"type": "gone", "worker": worker})

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
