"""Run one ``Assignment`` through taskiq's own receiver and turn the result into an ``Outcome``.

Going through ``Receiver.run_task`` rather than calling the function keeps parameter
parsing, ``TaskiqDepends``, ``on_error`` and the sync-in-a-thread path identical to
``taskiq worker``. ``run_task`` does not call ``pre_execute``/``post_execute`` or save the
result (``Receiver.callback`` does), so those steps are repeated here in the same order.

Timeouts and cancellation cancel the asyncio task awaiting the function. A sync task
already running in a thread cannot be stopped: the thread runs to completion, holding a
pool thread, and its result is discarded, the same limitation as in ``taskiq worker``.

GPU devices are not exported as ``CUDA_VISIBLE_DEVICES``: the environment is process-wide
and concurrent attempts would overwrite each other's. Tasks call ``current_gpu_devices()``
(or read the ``fleet_gpu_devices`` label through ``Context``) and pick their devices.

Logs never carry a task's arguments (they may hold secrets): taskiq's receiver logs a
cancelled attempt at ERROR with its traceback, a task's exception with its traceback, and
a parameter it cannot parse with pydantic's error, which quotes the value. ``TaskLogGuard``
rewrites those records on taskiq's loggers before any handler sees them: a cancellation
becomes one INFO line, an exception its type and clipped message (a ``ValidationError``
without its inputs), a ``TaskiqMessage`` its task name and id, and no traceback is kept.
The whole traceback still reaches the coordinator in the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, JsonValue, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python
from taskiq import AsyncBroker, TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.exceptions import NoResultError
from taskiq.receiver import Receiver
from taskiq.utils import maybe_awaitable

from shared.context import PipelineContext, attempt_var, context_parameter, gpu_devices_var
from shared.wire import codec as wire_codec
from shared.wire import label_keys
from shared.wire.protocol import Assignment, AttemptRef, ErrorInfo, Outcome, Status
from shared.wire.values import depth_error

__all__ = ["AttemptCancelled", "TaskExecutor", "TaskLogGuard", "UnknownTask", "guard_task_logs"]
logger = logging.getLogger(__name__)
LOG_TEXT_LIMIT = 300
"""Characters of an exception's message in a log line."""
TASKIQ_LOGGERS = ("taskiq.receiver.receiver", "taskiq.receiver.params_parser")
"""The loggers of taskiq's receiver, which log messages, exceptions and parameters."""


class UnknownTask(LookupError):
    """Raised before anything runs, so the agent can Reject rather than report a failure."""


class AttemptCancelled(Exception):
    """Stored in the result backend for a cancelled attempt; an ordinary Exception so it
    serialises like any task error."""


@dataclass
class _Attempt:
    task: asyncio.Task[TaskiqResult[Any]]
    cancel_reason: str | None = None


class TaskExecutor:
    """Executes assignments on this agent; admission (capacity, draining) is the caller's job."""

    def __init__(
        self,
        broker: AsyncBroker,
        *,
        worker: str,
        max_threads: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._broker = broker
        self._worker = worker
        self._clock = clock
        self._threads = ThreadPoolExecutor(max_threads, thread_name_prefix="fleet-task")
        # As in `taskiq worker`: sync tasks in our pool, exceptions reach dependency
        # teardown. max_async_tasks only limits Receiver.listen(), unused here; setting it
        # silences the "unlimited number of async tasks" warning.
        self._receiver = Receiver(
            broker,
            executor=self._threads,
            validate_params=True,
            max_async_tasks=1,
            propagate_exceptions=True,
            run_startup=False,
        )
        self._running: dict[AttemptRef, _Attempt] = {}
        guard_task_logs()

    def has_task(self, name: str) -> bool:
        return self._broker.find_task(name) is not None

    def running(self) -> list[AttemptRef]:
        return list(self._running)

    def cancel(self, ref: AttemptRef, reason: str = "") -> bool:
        """False when the attempt is unknown or its function has already returned."""
        attempt = self._running.get(ref)
        if attempt is None or attempt.task.done():
            return False
        attempt.cancel_reason = reason or "cancelled on request"
        attempt.task.cancel()
        return True

    def close(self) -> None:
        """Release the thread pool without waiting for threads that outlived their attempt."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def run(self, assignment: Assignment) -> Outcome:
        """Run one attempt to its end; task errors, timeouts and cancellation become Outcomes.

        ``arg_refs`` must be resolved (values substituted, refs cleared) by the caller. When
        ``assignment.timeout`` is set it replaces taskiq's ``timeout`` label, so expiry is
        reported once, as ``timed_out``, instead of racing taskiq's own ``TimeoutError``.
        """
        task = self._broker.find_task(assignment.task_name)
        if task is None:
            raise UnknownTask(f"this agent has no task named {assignment.task_name!r}")
        if assignment.arg_refs:
            raise ValueError("resolve arg_refs before running the assignment")
        if assignment.ref in self._running:
            raise ValueError(f"attempt {assignment.ref.key} is already running")
        started = self._clock()
        message = self._message(assignment)
        self._give_context(task.original_func, message, assignment, started)
        inner = asyncio.create_task(self._invoke(task.original_func, message, assignment))
        attempt = self._running[assignment.ref] = _Attempt(inner)
        try:
            expired = await _until_done(inner, assignment.timeout)
            status, result = await self._settle(attempt, assignment.timeout, expired)
        finally:
            inner.cancel()  # no-op once done; stops the attempt if our caller was cancelled
            del self._running[assignment.ref]
        await self._after(message, result)
        return self._outcome(assignment, status, result, started)

    def _message(self, assignment: Assignment) -> TaskiqMessage:
        labels: dict[str, Any] = dict(assignment.labels)
        if assignment.timeout is not None:
            labels.pop("timeout", None)
        labels[label_keys.ATTEMPT] = assignment.ref.attempt
        labels[label_keys.GPU_DEVICES] = ",".join(map(str, assignment.gpu_devices))
        labels[label_keys.WORKER] = self._worker
        return TaskiqMessage(
            task_id=assignment.ref.key,
            task_name=assignment.task_name,
            labels=labels,
            args=list(assignment.args),
            kwargs=dict(assignment.kwargs),
        )

    def _give_context(
        self, func: Callable[..., Any], message: TaskiqMessage, a: Assignment, started: float
    ) -> None:
        """Fill a ``PipelineContext`` parameter the task declares and the caller left out."""
        name = context_parameter(func)
        if name is None or name in message.kwargs:
            return
        labels = a.labels
        step = labels.get(label_keys.STEP)
        message.kwargs[name] = PipelineContext(
            pipeline_id=a.ref.run_id,
            step_index=step if isinstance(step, int) else 0,
            task_id=a.ref.key,
            execution_mode=str(labels.get(label_keys.MODE, "parallel")),
            started_at=datetime.fromtimestamp(started, UTC),
            broker=self._broker,
            worker=self._worker,
            gpu_devices=tuple(a.gpu_devices),
            attempt=a.ref.attempt,
        )

    async def _invoke(
        self, target: Callable[..., Any], message: TaskiqMessage, assignment: Assignment
    ) -> TaskiqResult[Any]:
        # This coroutine is its own asyncio task with its own context copy: no reset needed.
        attempt_var.set(assignment.ref.attempt)
        gpu_devices_var.set(tuple(assignment.gpu_devices))
        for middleware in self._broker.middlewares:
            if type(middleware).pre_execute is not TaskiqMiddleware.pre_execute:
                message = await maybe_awaitable(middleware.pre_execute(message))
        return await self._receiver.run_task(target, message)

    async def _settle(
        self, attempt: _Attempt, limit: float | None, expired: bool
    ) -> tuple[Status, TaskiqResult[Any]]:
        """Stop the attempt if still running and decide how it ended.

        ``run_task`` catches BaseException, CancelledError included, so a cancelled attempt
        usually *returns* a result; the status comes from why we cancelled it.
        """
        inner = attempt.task
        timed_out = expired or not inner.done()
        inner.cancel()
        try:
            result = await inner
        except asyncio.CancelledError as exc:
            if _cancelling():  # our caller is being cancelled, not just the attempt
                raise
            result = _failure(exc)
        except Exception as exc:  # pre_execute middleware raised
            result = _failure(exc)
        if attempt.cancel_reason is not None:
            return "cancelled", _failure(AttemptCancelled(attempt.cancel_reason))
        if timed_out:
            return "timed_out", _failure(TimeoutError(f"exceeded its timeout of {limit:g} s"))
        return "failed" if _is_error(result) else "succeeded", result

    async def _after(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        """post_execute and the result backend, as Receiver.callback does; their failures
        are logged and do not change the outcome, since the task itself has finished."""
        try:
            for middleware in reversed(self._broker.middlewares):
                if type(middleware).post_execute is not TaskiqMiddleware.post_execute:
                    await maybe_awaitable(middleware.post_execute(message, result))
            if isinstance(result.error, NoResultError):
                return
            await self._broker.result_backend.set_result(message.task_id, result)
            for middleware in reversed(self._broker.middlewares):
                if type(middleware).post_save is not TaskiqMiddleware.post_save:
                    await maybe_awaitable(middleware.post_save(message, result))
        except Exception as exc:  # no traceback: a middleware's error may quote the arguments
            logger.error(
                "post_execute or result backend failed for %s: %s",
                message.task_id,
                safe_error(exc),
            )

    def _outcome(
        self, assignment: Assignment, status: Status, result: TaskiqResult[Any], started: float
    ) -> Outcome:
        """The attempt's outcome; a returned value is encoded to JSON here, once, and the
        outcome carries those bytes to the payload stream or into its own message."""
        value: JsonValue = None
        data: bytes | None = None
        error = None if result.error is None else _error_info(result.error)
        if status == "succeeded":
            error = None  # NoResultError: the task chose not to return a value
            try:
                value, data = _encoded(result.return_value)
            except (PydanticSerializationError, TypeError, ValueError, RecursionError) as exc:
                status, error = "failed", ErrorInfo(type="UnserializableResult", message=str(exc))
        outcome = Outcome(
            ref=assignment.ref,
            worker=self._worker,
            status=status,
            return_value=value,
            error=error,
            started_at=started,
            finished_at=max(started, self._clock()),
        )
        return outcome if data is None else outcome.with_value_json(data)


async def _until_done(inner: asyncio.Task[TaskiqResult[Any]], limit: float | None) -> bool:
    """Until ``inner`` ends (however) or ``limit`` seconds pass, then whether they did;
    raises only when this task is cancelled. Awaiting the task itself resumes this one in
    the loop's next turn, where ``asyncio.wait`` took two (a callback, then a waiter): it is
    on each attempt's way from its function's return to its outcome. The limit cancels
    ``inner`` through this wait, and ``inner`` may still return a result; so may a cancel
    of this task, which is raised here all the same."""
    timeout = asyncio.timeout(limit)
    try:
        async with timeout:
            await inner
    except asyncio.CancelledError:
        if _cancelling():
            raise
    except Exception:  # inner's own error (``_settle`` reads it), or the limit
        pass
    if _cancelling():  # cancelling this task cancelled inner, which then returned
        raise asyncio.CancelledError
    return timeout.expired()


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _failure(exc: BaseException) -> TaskiqResult[Any]:
    return TaskiqResult(is_err=True, return_value=None, execution_time=0.0, error=exc)


def _is_error(result: TaskiqResult[Any]) -> bool:
    return result.is_err and not isinstance(result.error, NoResultError)


def _encoded(value: Any) -> tuple[JsonValue, bytes | None]:
    """Converted as pydantic would (models, dates, tuples), and its strict JSON: the one
    encoding of the value on the agent (``encode_value``); no bytes for ``None``."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    converted: JsonValue = to_jsonable_python(value)
    if converted is None:
        return None, None
    why = depth_error(converted)
    if why is not None:
        raise ValueError(f"the return {why}")
    return converted, wire_codec.encode_value(converted)


def _error_info(exc: BaseException) -> ErrorInfo:
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    return ErrorInfo(
        type=name,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        module=cls.__module__,
        qualname=cls.__qualname__,
    )


# -- logs without arguments ------------------------------------------------------------------


def _clip(text: str) -> str:
    return text if len(text) <= LOG_TEXT_LIMIT else text[: LOG_TEXT_LIMIT - 3] + "..."


def safe_error(exc: BaseException) -> str:
    """An exception as a log may show it: type and clipped message; a pydantic
    ``ValidationError`` by where and why only, never the input it quotes."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        where = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or exc.title}: {e['msg']}" for e in errors
        )
        return _clip(f"ValidationError: {where}")
    return _clip(f"{type(exc).__name__}: {exc}")


def _safe_arg(arg: object) -> object:
    if isinstance(arg, TaskiqMessage):
        return f"<task {arg.task_name} {arg.task_id}>"
    if isinstance(arg, BaseException):
        return safe_error(arg)
    return arg


class TaskLogGuard(logging.Filter):
    """Rewrites taskiq's records so no task argument reaches a log (module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        quoted = isinstance(record.args, tuple) and any(arg is exc for arg in record.args)
        if isinstance(record.args, tuple):
            record.args = tuple(_safe_arg(arg) for arg in record.args)
        elif record.args:  # a mapping: "%(name)s" style
            record.args = {k: _safe_arg(v) for k, v in record.args.items()}
        if isinstance(exc, asyncio.CancelledError):
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            record.msg, record.args = "task cancelled", ()
        elif exc is not None and not quoted:
            record.msg = f"{record.getMessage()} %s"
            record.args = (safe_error(exc),)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


_GUARD = TaskLogGuard()


def guard_task_logs() -> None:
    """Put the guard on taskiq's receiver loggers, once per process."""
    for name in TASKIQ_LOGGERS:
        log = logging.getLogger(name)
        if _GUARD not in log.filters:
            log.addFilter(_GUARD)
