"""Client-side batching for ``FleetBroker`` (``@broker.task(batch=True, ...)``).

Each ``.kiq(item, **other)`` queues one item. Items are grouped per task and per value of
the other arguments (and labels); a group flushes as one node -- one run, resources
reserved once -- when it reaches ``batch_size``, ``batch_timeout`` seconds after its
first item, and on broker shutdown. The function receives ``list[item]`` as its first
parameter and the other arguments as given.

``Batcher`` is the grouping and flush logic alone, with an injectable clock, so it can be
tested without an event loop; ``FleetBroker`` drives it (timers, submission).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from shared.wire import label_keys

DEFAULT_SIZE = 100
DEFAULT_TIMEOUT = 3.0


class BatchConfigError(ValueError):
    """A task's ``batch_size`` / ``batch_timeout`` labels are not usable."""


@dataclass(frozen=True)
class BatchConfig:
    size: int = DEFAULT_SIZE
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_labels(cls, labels: dict[str, Any]) -> BatchConfig | None:
        """The config when the labels ask for batching (``batch`` true), else ``None``.
        taskiq may carry label values as text, so ``"True"``/``"60"``/``"3"`` are read too."""
        if not _truthy(labels.get(label_keys.BATCH)):
            return None
        try:
            size = int(_or(labels.get(label_keys.BATCH_SIZE), DEFAULT_SIZE))
            timeout = float(_or(labels.get(label_keys.BATCH_TIMEOUT), DEFAULT_TIMEOUT))
        except (TypeError, ValueError) as exc:
            raise BatchConfigError(f"bad batch labels: {exc}") from None
        if size < 1:
            raise BatchConfigError(f"batch_size must be >= 1, got {size}")
        if not timeout > 0:
            raise BatchConfigError(f"batch_timeout must be > 0, got {timeout}")
        return cls(size=size, timeout=timeout)


def _or(value: Any, default: Any) -> Any:
    return default if value is None or value == "None" else value


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


@dataclass(frozen=True)
class Member:
    """One ``kiq``: its task id and the item it contributed."""

    task_id: str
    item: Any


@dataclass
class Batch:
    """A group of items that will run as one node."""

    key: str
    task_name: str
    run_id: str
    args: list[Any]
    """The other positional arguments (the list of items goes before them)."""
    kwargs: dict[str, Any]
    labels: dict[str, Any]
    item_name: str | None
    """The item's parameter name when it was passed by keyword, else ``None``."""
    config: BatchConfig
    opened_at: float
    members: list[Member] = field(default_factory=list)

    @property
    def deadline(self) -> float:
        return self.opened_at + self.config.timeout

    @property
    def items(self) -> list[Any]:
        return [m.item for m in self.members]

    def call(self) -> tuple[list[Any], dict[str, Any]]:
        """The node's ``args`` and ``kwargs``: the items' list in the item's place."""
        if self.item_name is None:
            return [self.items, *self.args], dict(self.kwargs)
        return list(self.args), {**self.kwargs, self.item_name: self.items}


def group_key(
    task_name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    labels: dict[str, Any],
    item_name: str | None,
) -> str:
    """Equal for kiqs that may share a batch: same task, same other arguments, labels."""
    return json.dumps(
        [task_name, item_name, args, kwargs, labels],
        sort_keys=True,
        separators=(",", ":"),
        default=repr,
    )


def new_run_id() -> str:
    return f"batch-{uuid.uuid4().hex}"


class Batcher:
    """Open groups and when they are due. Not thread-safe; no I/O."""

    def __init__(
        self,
        clock: Callable[[], float],
        new_id: Callable[[], str] = new_run_id,
    ) -> None:
        self._clock = clock
        self._new_id = new_id
        self._open: dict[str, Batch] = {}

    def __len__(self) -> int:
        return len(self._open)

    def pending(self) -> int:
        """Items queued and not yet flushed."""
        return sum(len(b.members) for b in self._open.values())

    def add(
        self,
        task_name: str,
        task_id: str,
        item: Any,
        *,
        args: list[Any],
        kwargs: dict[str, Any],
        labels: dict[str, Any],
        config: BatchConfig,
        item_name: str | None = None,
    ) -> tuple[Batch, int, bool]:
        """Queue one item: its batch, its index in it, and whether the batch is now full.
        A full batch is removed from the open groups: the caller flushes it; the next item
        of the same group opens a new batch."""
        key = group_key(task_name, args, kwargs, labels, item_name)
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = Batch(
                key=key,
                task_name=task_name,
                run_id=self._new_id(),
                args=list(args),
                kwargs=dict(kwargs),
                labels=dict(labels),
                item_name=item_name,
                config=config,
                opened_at=self._clock(),
            )
        index = len(batch.members)
        batch.members.append(Member(task_id, item))
        full = len(batch.members) >= config.size
        if full:
            del self._open[key]
        return batch, index, full

    def due(self) -> list[Batch]:
        """Remove and return the batches whose timeout has passed."""
        now = self._clock()
        ready = [b for b in self._open.values() if b.deadline <= now]
        for batch in ready:
            del self._open[batch.key]
        return ready

    def next_deadline(self) -> float | None:
        return min((b.deadline for b in self._open.values()), default=None)

    def drain(self) -> list[Batch]:
        """Remove and return every open batch (shutdown, explicit flush)."""
        ready = list(self._open.values())
        self._open.clear()
        return ready


def member_result(value: Any, index: int, count: int) -> Any:
    """What one member gets: element ``index`` when the function returned a list as long
    as the batch, else the whole result."""
    if isinstance(value, list) and len(value) == count:
        return value[index]
    return value


# --- the async side, driven by FleetBroker --------------------------------------------

Submit = Callable[[Batch], Awaitable[Any]]
"""Submits a flushed batch as one run (``FleetBroker._submit_batch``); returns its handle."""


class BatchQueue:
    """``Batcher`` on the running loop: timers for ``batch_timeout``, submission of flushed
    batches in the background (``kiq`` only queues), and where each member's run is."""

    def __init__(self, submit: Submit) -> None:
        self._submit = submit
        self._batcher: Batcher | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.members: OrderedDict[str, tuple[Batch, int]] = OrderedDict()
        self.submitted: dict[str, asyncio.Future[Any]] = {}

    def _loop_batcher(self) -> Batcher:
        if self._batcher is None:
            self._batcher = Batcher(asyncio.get_running_loop().time)
        return self._batcher

    def add(
        self,
        task_name: str,
        task_id: str,
        item: Any,
        *,
        args: list[Any],
        kwargs: dict[str, Any],
        labels: dict[str, Any],
        config: BatchConfig,
        item_name: str | None = None,
    ) -> None:
        batcher = self._loop_batcher()
        batch, index, full = batcher.add(
            task_name,
            task_id,
            item,
            args=args,
            kwargs=kwargs,
            labels=labels,
            config=config,
            item_name=item_name,
        )
        if batch.run_id not in self.submitted:
            self.submitted[batch.run_id] = asyncio.get_running_loop().create_future()
        self.members[task_id] = (batch, index)
        while len(self.members) > _KEEP:
            _, (old, _) = self.members.popitem(last=False)
            self.submitted.pop(old.run_id, None)
        if full:
            self._flush(batch)
        self._arm()

    def _arm(self) -> None:
        """One timer, for the earliest deadline of the open groups."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batcher = self._loop_batcher()
        deadline = batcher.next_deadline()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        for batch in self._loop_batcher().due():
            self._flush(batch)
        self._arm()

    def _flush(self, batch: Batch) -> None:
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _run(self, batch: Batch) -> None:
        future = self.submitted.get(batch.run_id)
        try:
            handle = await self._submit(batch)
        except Exception as exc:  # every member's wait_result reports it
            if future is not None and not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning
            return
        if future is not None and not future.done():
            future.set_result(handle)

    async def flush(self) -> None:
        """Flush every open group now and wait until all flushed batches are submitted."""
        if self._batcher is not None:
            for batch in self._batcher.drain():
                self._flush(batch)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._flushes:
            await asyncio.gather(*list(self._flushes), return_exceptions=True)

    def run_of(self, task_id: str) -> tuple[str, int, Batch] | None:
        found = self.members.get(task_id)
        if found is None:
            return None
        batch, index = found
        return batch.run_id, index, batch

    async def submission(self, run_id: str) -> Any:
        """The batch run's handle once it is submitted (raises what submission raised)."""
        return await asyncio.shield(self.submitted[run_id])


_KEEP = 100_000
