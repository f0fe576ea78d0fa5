"""A stand-in for the coordinator: publishes assignments and cancels, collects what agents say.

Until the real coordinator exists the agent is driven with this; it speaks only
the wire protocol (``shared.wire.protocol`` / ``shared.wire.subjects``), as the real one will.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from shared.jetstream import ensure_streams
from shared.wire.protocol import (
    TERM_HEADER,
    Accept,
    Assignment,
    AttemptRef,
    Batch,
    Cancel,
    Deregister,
    Heartbeat,
    Outcome,
    Register,
    Reject,
    decode,
    decode_each,
    encode,
    encode_each,
)
from shared.wire.subjects import Subjects
from taskiq_fleet import ResourceRequest

T = TypeVar("T")
WAIT = 20.0

_runs = itertools.count(1)


class Inbox:
    """Messages of one kind, with waiting for the first that satisfies a predicate."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Condition()

    async def add(self, item: Any) -> None:
        async with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    async def wait(self, pred: Callable[[Any], bool], within: float = WAIT) -> Any:
        async def first() -> Any:
            async with self._changed:
                while True:
                    for item in self.items:
                        if pred(item):
                            return item
                    await self._changed.wait()

        return await asyncio.wait_for(first(), within)


class StandIn:
    def __init__(self, url: str, prefix: str = "fleet") -> None:
        self.url = url
        self.subjects = Subjects(prefix)
        self.nc: Client | None = None
        self.inboxes: dict[str, Inbox] = defaultdict(Inbox)

    async def __aenter__(self) -> StandIn:
        self.nc = await nats.connect(
            self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1, name="standin"
        )
        await ensure_streams(self.nc.jetstream(), self.subjects)
        s = self.subjects
        for subject in (s.all_registers, s.all_heartbeats, s.all_deregisters, s.all_acks):
            await self.nc.subscribe(subject, cb=self._collect)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.nc is not None:
            await self.nc.close()

    async def _collect(self, msg: Msg) -> None:
        decoded = decode(msg.data)
        for item in decoded.items if isinstance(decoded, Batch) else (decoded,):
            await self.inboxes[item.type].add(item)

    @property
    def client(self) -> Client:
        assert self.nc is not None
        return self.nc

    async def registered(self, worker: str) -> Register:
        msg: Register = await self.inboxes["register"].wait(lambda m: m.worker == worker)
        return msg

    async def heartbeat(
        self, worker: str, pred: Callable[[Heartbeat], bool] = lambda h: True
    ) -> Heartbeat:
        msg: Heartbeat = await self.inboxes["heartbeat"].wait(
            lambda h: h.worker == worker and pred(h)
        )
        return msg

    async def deregistered(self, worker: str) -> Deregister:
        msg: Deregister = await self.inboxes["deregister"].wait(lambda m: m.worker == worker)
        return msg

    async def ack(self, ref: AttemptRef) -> Accept | Reject:
        """The agent's answer to an assignment: an accept, a reject, or (as the coordinator
        reads it) the attempt's stored outcome, which is all a quick one sends."""

        async def one(kind: str) -> Accept | Reject:
            found: Accept | Reject = await self.inboxes[kind].wait(lambda m: m.ref == ref)
            return found

        async def ended() -> Accept:
            outcome = await self.outcome(ref)
            return Accept(ref=ref, worker=outcome.worker)

        tasks = [
            asyncio.create_task(one("accept")),
            asyncio.create_task(one("reject")),
            asyncio.create_task(ended()),
        ]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return done.pop().result()

    term = 0
    """The leader term stamped on what this stand-in sends (``TERM_HEADER``)."""

    async def send(self, worker: str, *assignments: Assignment) -> None:
        await self.client.publish(
            self.subjects.assign(worker), encode_each(assignments), headers=self._term()
        )

    async def assign(self, worker: str, assignment: Assignment) -> Accept | Reject:
        await self.send(worker, assignment)
        return await self.ack(assignment.ref)

    async def cancel(self, worker: str, ref: AttemptRef, reason: str = "test") -> None:
        await self.client.publish(
            self.subjects.cancel(worker),
            encode(Cancel(ref=ref, reason=reason)),
            headers=self._term(),
        )

    def _term(self) -> dict[str, str]:
        return {TERM_HEADER: str(self.term)}

    async def outcome(self, ref: AttemptRef, within: float = WAIT) -> Outcome:
        """Read from JetStream, as the coordinator will: proves the outcome was stored."""
        found = await self._stored(ref, within, stop_at_first=True)
        return found[0]

    async def outcome_count(self, ref: AttemptRef) -> int:
        """How many stored outcomes are for ``ref`` (singles and inside batches)."""
        return len(await self._stored(ref, 2.0, stop_at_first=False))

    async def _stored(
        self, ref: AttemptRef, within: float, *, stop_at_first: bool
    ) -> list[Outcome]:
        js = self.client.jetstream()
        sub = await js.subscribe(self.subjects.all_outcomes, ordered_consumer=True)
        found: list[Outcome] = []
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=within)
                except TimeoutError:
                    if stop_at_first:
                        raise
                    return found
                found += [o for o in decode_each(msg.data, Outcome) if o.ref == ref]
                if found and stop_at_first:
                    return found
                if not stop_at_first and sub.pending_msgs == 0:
                    info = await js.stream_info(self.subjects.outcomes_stream)
                    if msg.metadata.sequence.stream >= info.state.last_seq:
                        return found
        finally:
            await sub.unsubscribe()


def attempt(node: str = "n", *, run: str | None = None, number: int = 1) -> AttemptRef:
    return AttemptRef(run_id=run or f"run{next(_runs)}", node_id=node, attempt=number)


def assignment(
    task: str,
    *args: Any,
    ref: AttemptRef | None = None,
    gpu_devices: tuple[int, ...] = (),
    timeout: float | None = None,
    **request: Any,
) -> Assignment:
    return Assignment(
        ref=ref or attempt(),
        task_name=task,
        args=args,
        request=ResourceRequest(**request),
        gpu_devices=gpu_devices,
        timeout=timeout,
    )
