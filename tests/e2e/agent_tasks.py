"""Tasks the end-to-end tests give to agent processes (APP ``tests.e2e.agent_tasks:broker``)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from pathlib import Path

from taskiq import InMemoryBroker

from taskiq_fleet import PipelineContext, current_attempt, current_gpu_devices

broker = InMemoryBroker()


@broker.task("add")
def add(a: int, b: int) -> int:
    return a + b


@broker.task("describe")
async def describe(text: str) -> dict[str, object]:
    await asyncio.sleep(0)
    return {
        "text": text,
        "attempt": current_attempt(),
        "gpus": list(current_gpu_devices()),
        "pid": os.getpid(),
    }


@broker.task("fail")
def fail(message: str) -> None:
    raise ValueError(message)


@broker.task("sleep_for")
async def sleep_for(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@broker.task("wait_for_gate")
def wait_for_gate(gate: str, done: str, value: int) -> int:
    """Blocks (in a thread, as a sync task) until the test creates ``gate``."""
    while not Path(gate).exists():
        time.sleep(0.01)
    Path(done).touch()
    return value


@broker.task("async_wait_for_gate")
async def async_wait_for_gate(gate: str) -> str:
    # The gate is another process's file: there is no event to await.
    while not Path(gate).exists():  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.01)
    return "opened"


@broker.task("big")
def big(size: int) -> str:
    return "x" * size


@broker.task("record_execution")
async def record_execution(directory: str, ctx: PipelineContext) -> int:
    """Leaves one file per execution, named by its attempt identity and a fresh id, so a
    test can count how often each (run, node, attempt) really ran."""
    await asyncio.sleep(0.05)
    attempt = current_attempt()
    name = f"{ctx.task_id}.{attempt}.{uuid.uuid4().hex}"
    await asyncio.to_thread((Path(directory) / name).touch)
    return attempt or 0


@broker.task("chain_step")
async def chain_step(
    directory: str,
    ctx: PipelineContext,
    x: int | list[int] = 0,
    gate: str = "",
    fail_attempts: int = 0,
    outputs: int = 1,
) -> int | list[int]:
    """A step of a chain: waits for the file ``gate`` when given, fails its first
    ``fail_attempts`` attempts, leaves a file per execution (as ``record_execution``) and
    returns x + 1 (x summed when a list), once per output when it has several."""
    while gate and not Path(gate).exists():  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.01)
    attempt = current_attempt() or 0
    name = f"{ctx.task_id}.{attempt}.{uuid.uuid4().hex}"
    await asyncio.to_thread((Path(directory) / name).touch)
    if attempt <= fail_attempts:
        raise RuntimeError(f"attempt {attempt} fails, as asked")
    value = (sum(x) if isinstance(x, list) else x) + 1
    return [value] * outputs if outputs > 1 else value


@broker.task("measure")
def measure(text: str) -> int:
    return len(text)


def executions(directory: Path) -> Counter[str]:
    """How often each attempt ("<run>.<node>.<attempt>") of ``record_execution`` ran."""
    return Counter(path.name.rsplit(".", 2)[0] for path in directory.iterdir())


@broker.task("alone")
async def alone(directory: str) -> str:
    """Fails if another ``alone`` of ``directory`` runs at the same time on this host: it
    holds a lock file (created exclusively) while it runs."""
    lock = Path(directory) / "running"
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    try:
        await asyncio.sleep(0.02)
    finally:
        os.close(fd)
        lock.unlink()
    return "ok"
