"""What a kiq through ``FleetBroker`` hands back, and where its result is read: the task
handle keeps the run's handle, and the result backend reads the pushed end of the run.

Results are the ends of runs, pushed by the coordinator; nothing is stored here.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any, Protocol

from taskiq import AsyncResultBackend, TaskiqMiddleware, TaskiqResult
from taskiq.decor import AsyncTaskiqDecoratedTask
from taskiq.exceptions import SendTaskError, TaskiqResultTimeoutError
from taskiq.kicker import AsyncKicker
from taskiq.task import AsyncTaskiqTask
from taskiq.utils import maybe_awaitable

from shared.wire.runs import RunUpdate
from taskiq_fleet.backend import Backend, Handle
from taskiq_fleet.batching import BatchConfig
from taskiq_fleet.remote_errors import TaskFailed, task_error

RESULT = "result"
"""The one output of a kiq's node: the task's return value."""


class Connected(Protocol):
    """The broker, as its result backend needs it."""

    def connected(self) -> Backend: ...


ENDED_KEPT = 10_000
"""Ended runs whose handles the result backend keeps for a look-up by task id alone; a
``FleetTask`` keeps its own, so its result never needs the coordinator."""


class FleetTask(AsyncTaskiqTask[Any]):
    """taskiq's task handle, holding the run's handle: ``wait_result`` and ``get_result``
    read the pushed end from it, however many runs were kicked since (a look-up by id
    asks a coordinator that may be busy with a deep queue)."""

    def __init__(
        self,
        task_id: str,
        result_backend: AsyncResultBackend[Any],
        return_type: type[Any] | None = None,
        handle: Handle | None = None,
    ) -> None:
        super().__init__(task_id, result_backend, return_type)
        self.handle = handle

    async def wait_result(
        self, check_interval: float = 0.2, timeout: float = -1.0, with_logs: bool = False
    ) -> TaskiqResult[Any]:
        backend = self._backend()
        self.handle = await backend.wait(
            self.task_id, None if timeout <= 0 else timeout, self.handle
        )
        return await self.get_result(with_logs=with_logs)

    async def is_ready(self) -> bool:
        if self.handle is not None and self.handle.done:
            return True
        return await super().is_ready()

    async def get_result(self, with_logs: bool = False) -> TaskiqResult[Any]:
        if self.handle is not None:
            self._backend().keep(self.handle)  # found by id in the call below
        return await super().get_result(with_logs=with_logs)

    def _backend(self) -> FleetResultBackend:
        backend = self.result_backend
        assert isinstance(backend, FleetResultBackend)
        return backend


class FleetKicker(AsyncKicker[Any, Any]):
    async def kiq(self, *args: Any, **kwargs: Any) -> FleetTask:
        task = await self._send(*args, **kwargs)
        # a batch member's result is an element of the function's, not its type
        batched = BatchConfig.from_labels(self.labels) is not None
        backend = task.result_backend
        handle = backend.handle(task.task_id) if isinstance(backend, FleetResultBackend) else None
        return_type = None if batched else task.return_type
        return FleetTask(task.task_id, backend, return_type, handle)

    async def _send(self, *args: Any, **kwargs: Any) -> AsyncTaskiqTask[Any]:
        """taskiq's ``kiq``, middlewares and all, handing a ``FleetBroker`` the message
        itself (``kick_message``) rather than its formatted bytes, which it would only
        parse back."""
        kick = getattr(self.broker, "kick_message", None)
        if kick is None:
            return await super().kiq(*args, **kwargs)
        message = self._prepare_message(*args, **kwargs)
        middlewares = self.broker.middlewares
        for middleware in middlewares:
            if type(middleware).pre_send is not TaskiqMiddleware.pre_send:
                message = await maybe_awaitable(middleware.pre_send(message))
        try:
            await kick(message)
        except Exception as exc:
            raise SendTaskError from exc
        for middleware in reversed(middlewares):
            if type(middleware).post_send is not TaskiqMiddleware.post_send:
                await maybe_awaitable(middleware.post_send(message))
        return AsyncTaskiqTask(
            task_id=message.task_id,
            result_backend=self.broker.result_backend,
            return_type=self.return_type,
        )


class FleetDecoratedTask(AsyncTaskiqDecoratedTask[Any, Any]):
    def kicker(self) -> FleetKicker:
        return FleetKicker(
            task_name=self.task_name,
            broker=self.broker,
            labels=dict(self.labels),
            return_type=self.return_type,
        )


class FleetResultBackend(AsyncResultBackend[Any]):
    """Results are the ends of runs, pushed by the coordinator; nothing is stored here.

    Every run kicked here and not ended is kept (its client keeps it anyway, to deliver
    its end), so ``wait_all`` waits for all of them; of the ended ones the last
    ``ENDED_KEPT``. An id found in neither is asked of the coordinator."""

    def __init__(self, broker: Connected) -> None:
        self._broker = broker
        self._running: dict[str, Handle] = {}
        self._ended: OrderedDict[str, Handle] = OrderedDict()

    def track(self, handle: Handle) -> None:
        if handle.done:
            self.keep(handle)
            return
        self._running[handle.run_id] = handle
        handle.on_update(self._update)

    def _update(self, update: RunUpdate) -> None:
        if update.run is not None:
            handle = self._running.pop(update.run_id, None)
            if handle is not None:
                self.keep(handle)

    def keep(self, handle: Handle) -> None:
        """An ended run's handle, as the newest of the ended ones kept."""
        if not handle.done:
            return
        self._ended[handle.run_id] = handle
        self._ended.move_to_end(handle.run_id)
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    def handle(self, task_id: str) -> Handle | None:
        return self._running.get(task_id) or self._ended.get(task_id)

    async def set_result(self, task_id: str, result: TaskiqResult[Any]) -> None:
        """Agents report through JetStream; the taskiq result path has nothing to do."""

    async def wait_all(self) -> None:
        await asyncio.gather(*(h.wait() for h in list(self._running.values())))

    async def wait(
        self, task_id: str, timeout: float | None, handle: Handle | None = None
    ) -> Handle:
        """The run's handle once it ended (``handle``: the one the task keeps)."""
        handle = handle or self.handle(task_id)
        if handle is None:
            handle = await self._broker.connected().follow(task_id)
            self.track(handle)
        try:
            await handle.wait(timeout)
        except TimeoutError:
            raise TaskiqResultTimeoutError(timeout=timeout) from None
        return handle

    async def is_result_ready(self, task_id: str) -> bool:
        handle = self.handle(task_id)
        if handle is not None and handle.done:
            return True
        view = await self._broker.connected().status(task_id, missing_ok=True)
        return view is not None and view.done

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[Any]:
        handle = self.handle(task_id)
        view = handle.view if handle is not None else None
        if view is None:
            view = await self._broker.connected().status(task_id)
        if view is None or not view.done:
            raise LookupError(f"task {task_id} has no result yet")
        node = view.nodes[0] if view.nodes else None
        took = (node.duration if node is not None else None) or 0.0
        if view.status == "succeeded":
            outputs = await self._broker.connected().outputs(view)
            return TaskiqResult(is_err=False, return_value=outputs.get(RESULT), execution_time=took)
        error = node.error if node is not None else None
        failed = task_error(error) if error is not None else TaskFailed(view.error)
        return TaskiqResult(is_err=True, return_value=None, execution_time=took, error=failed)
