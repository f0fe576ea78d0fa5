"""Tasks for test_executor, built per test on a fresh InMemoryBroker so no state leaks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel
from taskiq import Context, InMemoryBroker, TaskiqDepends, TaskiqMessage, TaskiqMiddleware
from taskiq.result import TaskiqResult

from taskiq_fleet import current_attempt, current_gpu_devices


class Point(BaseModel):
    x: int
    y: int


class Recorder(TaskiqMiddleware):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        self.calls.append(("pre_execute", message.task_id))
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        self.calls.append(("post_execute", message.task_id))

    def on_error(
        self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException
    ) -> None:
        self.calls.append(("on_error", type(exception).__name__))


@dataclass
class Probe:
    started: asyncio.Event = field(default_factory=asyncio.Event)
    never: asyncio.Event = field(default_factory=asyncio.Event)
    release: threading.Event = field(default_factory=threading.Event)
    thread_done: threading.Event = field(default_factory=threading.Event)


def _scale() -> int:
    return 10


async def add(a: int, b: int) -> int:
    return a + b


def sync_add(a: int, b: int) -> dict[str, Any]:
    thread = threading.current_thread()
    return {"sum": a + b, "off_main": thread is not threading.main_thread(), "thread": thread.name}


async def point() -> Point:
    return Point(x=1, y=2)


async def boom() -> None:
    raise ValueError("bad input 7")


async def opaque() -> object:
    return object()


async def nan() -> float:
    return float("nan")


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


async def deep() -> object:
    """A return value json can encode but the wire refuses: deeper than its bound."""
    return nested(100)


async def scaled(x: int, factor: Annotated[int, TaskiqDepends(_scale)]) -> int:
    return x * factor


async def labels(context: Annotated[Context, TaskiqDepends()]) -> dict[str, Any]:
    return dict(context.message.labels)


async def whoami() -> dict[str, Any]:
    return {"attempt": current_attempt(), "gpus": list(current_gpu_devices())}


def sync_whoami() -> dict[str, Any]:
    return {
        "attempt": current_attempt(),
        "gpus": list(current_gpu_devices()),
        "off_main": threading.current_thread() is not threading.main_thread(),
    }


# Names spelled out: registering renames the function (``add__taskiq_original``).
PLAIN_TASKS: dict[str, Callable[..., Any]] = {
    "add": add,
    "sync_add": sync_add,
    "point": point,
    "boom": boom,
    "opaque": opaque,
    "nan": nan,
    "scaled": scaled,
    "labels": labels,
    "whoami": whoami,
    "sync_whoami": sync_whoami,
    "deep": deep,
}


def make_broker(probe: Probe) -> tuple[InMemoryBroker, Recorder]:
    """``hang``/``sync_hang`` block until ``probe`` says."""
    recorder = Recorder()
    broker = InMemoryBroker().with_middlewares(recorder)
    for name, func in PLAIN_TASKS.items():
        broker.register_task(func, task_name=name)

    async def hang() -> None:
        probe.started.set()
        await probe.never.wait()

    def sync_hang() -> str:
        probe.release.wait(10)
        probe.thread_done.set()
        return "late"

    broker.register_task(hang, task_name="hang")
    broker.register_task(sync_hang, task_name="sync_hang")
    return broker, recorder
