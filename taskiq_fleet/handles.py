"""What every run handle shares, on the cluster or in process: the pushed updates, the end,
and the errors a run can end with. Apart from the client so that the in-process fleet
needs no NATS client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from shared.wire.runs import NodeView, RunUpdate, RunView
from taskiq_fleet.remote_errors import first_failure, rebuilt

log = structlog.get_logger(__name__)


class FleetError(RuntimeError):
    """The coordinator refused a request, or gave no answer."""


class RunFailed(FleetError):
    def __init__(self, view: RunView) -> None:
        super().__init__(f"run {view.run_id} {view.status}: {view.error}")
        self.view = view


def run_failed(view: RunView) -> RunFailed:
    """What ``result()`` raises: an instance of the first failed task's exception class too,
    when this process has it (``remote_errors``)."""
    return rebuilt(RunFailed, first_failure(view), view)


class Flag:
    """``asyncio.Event``'s ``set``, ``clear``, ``is_set`` and ``wait`` in about 60 bytes: an
    Event holds a deque of 600 from its start, and a client holds a handle, with its flags,
    for every run it kicked that has not ended (a million, kicked at once)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        self.wake()

    def wake(self) -> None:
        """Those waiting now return, without setting it: a handle's poll or a reconnect
        wakes its waiter, which then asks whether the run ended."""
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)  # cancelled: not left behind
        return True


class PushedRun:
    """What every run handle keeps from the updates pushed to it: nodes, the end, listeners.

    Slots, and nothing made before it is needed: a client holds a handle for every run it
    kicked and has not seen end, and each object one holds is one more that every full
    garbage collection of the caller's process walks (``polls.py``)."""

    __slots__ = ("__weakref__", "_done", "_listeners", "nodes", "run_id", "view")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.nodes: dict[str, NodeView] = {}
        self.view: RunView | None = None
        self._done = Flag()
        self._listeners: tuple[Callable[[RunUpdate], None], ...] = ()

    def on_update(self, listener: Callable[[RunUpdate], None]) -> None:
        self._listeners = (*self._listeners, listener)

    def _apply(self, update: RunUpdate) -> None:
        self.nodes.update({n.id: n for n in update.nodes})
        if update.run is not None:
            self.view = update.run
            self.nodes.update({n.id: n for n in update.run.nodes})
            self._done.set()
        for listener in self._listeners:
            try:
                listener(update)
            except Exception:  # a listener's bug must not stop the updates of others
                log.exception("on_update listener failed", run=self.run_id)

    @property
    def done(self) -> bool:
        return self._done.is_set()
