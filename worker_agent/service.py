"""The agent on NATS: advertise, admit or refuse assignments, run them, report outcomes, drain.

This module only translates: messages in become calls on the pure guard and the
executor, their answers become messages out. Control traffic (adverts,
assignments, acks, cancels) is core NATS; outcomes go to JetStream through the
``Outbox`` so that neither a NATS restart nor a coordinator restart loses one.

A malformed message is logged and dropped: one bad publisher must not stop a
host from serving everybody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from taskiq import AsyncBroker

from shared.jetstream import INLINE_LIMIT, MSG_ID, ensure_streams, publish_stored, send_all
from shared.logging import DropLog, info_enabled
from shared.payload_cache import KeptPayloads
from shared.payloads import PayloadError, PayloadStore
from shared.resources import WorkerSpec
from shared.version import __version__
from shared.wire.batches import Bad, decode_apart
from shared.wire.codec import decode_value
from shared.wire.protocol import (
    TERM_HEADER,
    Accept,
    Assignment,
    AttemptRef,
    Cancel,
    Deregister,
    ErrorInfo,
    Heartbeat,
    Outcome,
    Pace,
    ProtocolError,
    Register,
    Reject,
    Reregister,
    decode_as,
    decode_each,
    encode,
    encode_each,
    join_encoded,
    size_chunks,
    task_digest,
)
from shared.wire.subjects import SubjectError, Subjects
from worker_agent.app import start_app, stop_app
from worker_agent.chains import Upstreams, taken
from worker_agent.executor import TaskExecutor
from worker_agent.guard import CapacityGuard, Refusal
from worker_agent.leases import AgentLeases
from worker_agent.outbox import Outbox
from worker_agent.usage import UsageProbe

log = structlog.get_logger(__name__)


def _bound(a: Assignment) -> Any:
    return log.bind(run=a.ref.run_id, node=a.ref.node_id, attempt=a.ref.attempt)


def _drops(agent: Agent) -> DropLog:
    """Counted, sampled lines for the junk an agent's inbox drops: a flood costs one line
    per second per kind of error, never a line per message."""
    return _drop_log(agent, "dropped a malformed message")


def _refusals(agent: Agent) -> DropLog:
    return _drop_log(agent, "refused a malformed assignment")


def _drop_log(agent: Agent, event: str) -> DropLog:
    found: DropLog | None = agent.__dict__.get(event)
    if found is None:
        found = agent.__dict__[event] = DropLog(log, event)
    return found


def _clip(text: str, chars: int = 200) -> str:
    return text if len(text) <= chars else text[:chars] + "..."


PUBLISH_TIMEOUT = 2
ACCEPT_DELAY = 0.01
"""How long an attempt runs (after its turn came, under a lease) before it is reported
running. A shorter one's outcome says it ran: one message fewer for the agent, nats-server
and the coordinator per quick task, a fifteenth of a round trip's messages."""
FLUSH_TIMEOUT = 10
"""How long a stopping agent keeps trying to store its last outcomes."""
ERROR_TEXT_LIMIT = 32 * 1024
"""Characters of an outcome's error message and traceback kept, so that it fits a NATS
message: an outcome too large to store would be retried forever and hang its run."""


@dataclass(frozen=True, slots=True)
class AgentSettings:
    heartbeat: float = 2.0
    drain_timeout: float = 30.0
    subjects: Subjects = field(default_factory=Subjects)
    inline_limit: int = INLINE_LIMIT
    max_threads: int | None = None
    payload_cache: int = 256 << 20
    """Bytes of stored values read lately kept in memory (``shared/payload_cache.py``)."""


class Agent:
    """One host's agent; ``run`` serves until ``stop`` is set, then drains."""

    def __init__(
        self,
        broker: AsyncBroker,
        spec: WorkerSpec,
        settings: AgentSettings = AgentSettings(),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self._broker = broker
        self._clock = clock
        self._subjects = settings.subjects
        self._guard = CapacityGuard(spec)
        self._leases = AgentLeases()
        self._upstreams = Upstreams()
        self._answers: dict[AttemptRef, str] = {}
        """Direct answers to send with their outcomes: the submitter's subject, by attempt."""
        self._queued: set[AttemptRef] = set()
        """Admitted under a lease, waiting for their turn (listed apart in heartbeats)."""
        self._executor = TaskExecutor(broker, worker=spec.name, max_threads=settings.max_threads)
        self._outbox = Outbox(self._store_outcomes, busy=lambda: bool(self._attempts))
        self._attempts: dict[AttemptRef, asyncio.Task[None]] = {}
        self._early_cancels: dict[AttemptRef, str] = {}
        self._background: set[asyncio.Task[object]] = set()
        self._started_at = clock()
        self._seq = 0
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._store: PayloadStore | None = None
        self._usage = UsageProbe()
        self._stopped = False
        self.dropped = 0
        """Malformed or unknown messages dropped since start (tests and logs read it)."""
        self._term = 0
        """The newest leader term seen in an assignment or cancel."""
        self._pace = 0.0
        """The coordinator's least interval between heartbeats (``Pace``); 0: none."""
        self._paced = asyncio.Event()
        self._beaten = 0.0
        """When the last heartbeat went out (the loop's clock)."""

    @property
    def name(self) -> str:
        return self.spec.name

    # -- NATS connection callbacks ------------------------------------------------------

    async def disconnected(self) -> None:
        if not self._stopped:
            log.warning("disconnected from NATS; outcomes are kept until it is back")

    async def reconnected(self) -> None:
        log.info("reconnected to NATS; registering again", pending_outcomes=len(self._outbox))
        self._spawn(self._register())
        self._outbox.kick()

    async def nats_error(self, exc: Exception) -> None:
        log.warning("NATS error", error=repr(exc))

    # -- lifecycle ---------------------------------------------------------------------

    async def run(
        self, nc: Client, stop: asyncio.Event, force: asyncio.Event | None = None
    ) -> None:
        self._nc = nc
        self._js = js = nc.jetstream()  # one for the connection (``publish_stored``)
        await ensure_streams(js, self._subjects)
        await start_app(self._broker)
        sub = await nc.subscribe(self._subjects.worker_inbox(self.name), cb=self._on_message)
        await self._register()
        loops = [asyncio.create_task(self._heartbeats()), asyncio.create_task(self._outbox.run())]
        log.info("agent serving", subject=self._subjects.worker_inbox(self.name))
        try:
            await stop.wait()
            await self._drain(force or asyncio.Event())
        finally:
            await sub.unsubscribe()
            for task in loops + list(self._background):
                task.cancel()
            await asyncio.gather(*loops, *self._background, return_exceptions=True)
            await self._farewell()
            self._stopped = True
            await stop_app(self._broker)
            self._executor.close()

    async def _drain(self, force: asyncio.Event) -> None:
        self._guard.draining = True
        log.info("draining", running=len(self._attempts), timeout=self.settings.drain_timeout)
        await self._heartbeat()
        await _wait_for(set(self._attempts.values()), self.settings.drain_timeout, force)
        for ref in list(self._attempts):
            self._cancel(ref, "the agent stopped before the attempt finished")
        await _wait_for(set(self._attempts.values()), FLUSH_TIMEOUT, force)
        if not await self._outbox.flush(FLUSH_TIMEOUT):
            lost = [o.ref.key for o in self._outbox.pending()]
            log.error("outcomes could not be stored before exit", attempts=lost)

    async def _farewell(self) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            return
        try:
            msg = Deregister(worker=self.name, reason="agent stopped")
            await nc.publish(self._subjects.deregister(self.name), encode(msg))
            await nc.flush(timeout=PUBLISH_TIMEOUT)
        except Exception as exc:  # the coordinator will notice missed heartbeats instead
            log.warning("could not deregister", error=repr(exc))

    # -- advertising -------------------------------------------------------------------

    async def _register(self) -> None:
        msg = Register(
            spec=self.spec,
            agent_version=__version__,
            pid=os.getpid(),
            started_at=self._started_at,
            heartbeat_interval=self._interval(),
            tasks=tuple(sorted(self._broker.get_all_tasks())),
            running=tuple(self._attempts),
        )
        await self._publish(self._subjects.register(self.name), encode(msg))
        await self._heartbeat()

    def _interval(self) -> float:
        return max(self.settings.heartbeat, self._pace)

    async def _heartbeats(self) -> None:
        """One beat an interval after the last; a new pace changes the wait under way."""
        loop = asyncio.get_running_loop()
        while True:
            self._paced.clear()
            wait = self._beaten + self._interval() - loop.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._paced.wait(), wait)
                continue
            await self._heartbeat()

    async def _heartbeat(self) -> None:
        self._beaten = asyncio.get_running_loop().time()
        usage = self._usage.sample()
        self._seq += 1
        msg = Heartbeat(
            worker=self.name,
            started_at=self._started_at,
            seq=self._seq,
            interval=self._interval(),
            capacity=self.spec,
            reserved=self._guard.reserved(),
            cpu_percent=usage.cpu_percent,
            available_ram_mb=usage.available_ram_mb,
            running=tuple(r for r in self._attempts if r not in self._queued),
            queued=tuple(self._queued),
            draining=self._guard.draining,
            tasks_digest=task_digest(self._broker.get_all_tasks()),
        )
        await self._publish(self._subjects.heartbeat(self.name), encode(msg))

    async def _publish(self, subject: str, data: bytes) -> bool:
        """Core publish of state that the next heartbeat repeats: skipped while offline.
        Whether it was handed to the connection."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return False
        try:
            await nc.publish(subject, data)
        except Exception as exc:
            log.warning("publish failed", subject=subject, error=repr(exc))
            return False
        return True

    # -- assignments and cancels ---------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        try:
            kind = self._verb(msg.subject)
            if kind in ("assign", "cancel") and self._stale(msg):
                return
            if kind == "assign":
                good, bad = decode_apart(msg.data, Assignment)
                await self._on_assignments(tuple(good), self._refuse_malformed(bad))
            elif kind == "reregister":
                asked = decode_as(msg.data, Reregister)
                log.info("registering again, as the coordinator asks", reason=asked.reason)
                await self._register()
            elif kind == "pace":
                self._pace = decode_as(msg.data, Pace).interval
                self._paced.set()
            else:
                for cancel in decode_each(msg.data, Cancel):
                    self._cancel(cancel.ref, cancel.reason or "cancelled by the coordinator")
        except ProtocolError as exc:
            self.dropped += 1
            error = _clip(str(exc))
            _drops(self).drop(exc.kind, subject=msg.subject, error=error, size=len(msg.data))

    def _stale(self, msg: Msg) -> bool:
        """From a leader older than the newest this agent has heard: dropped, whatever it
        says (that leader lost its lease; the new one decides)."""
        try:
            term = int((msg.headers or {}).get(TERM_HEADER, "0"))
        except ValueError:
            term = 0
        if term < self._term:
            self.dropped += 1
            _drops(self).drop("stale_term", subject=msg.subject, term=term, newest=self._term)
            return True
        self._term = term
        return False

    def _verb(self, subject: str) -> str:
        """``assign``, ``cancel`` or ``reregister``, for a subject addressed to this agent."""
        try:
            worker, verb = self._subjects.parse_worker_inbox(subject)
        except SubjectError as exc:
            raise ProtocolError("type", str(exc)) from None
        if worker != self.name:
            raise ProtocolError("type", f"{subject!r} is addressed to another worker")
        return verb

    async def _on_assignments(
        self, assignments: tuple[Assignment, ...], refused: Sequence[Reject] = ()
    ) -> None:
        admitted = (self._admit(a) for a in assignments)
        acks = [*refused, *(ack for ack in admitted if ack is not None)]
        if acks:
            await self._publish(self._subjects.ack(self.name), encode_each(acks))

    def _refuse_malformed(self, bad: list[Bad]) -> list[Reject]:
        """An assignment that did not decode is refused by its attempt, so its run learns
        why at once; one whose attempt cannot be read is only counted and logged."""
        refused = []
        for ref, error in bad:
            self.dropped += 1
            _refusals(self).drop(error.kind, error=_clip(str(error)))
            if ref is not None:
                reason = f"malformed assignment: {error}"
                refused.append(Reject(ref=ref, worker=self.name, code="malformed", reason=reason))
        return refused

    def _admit(self, a: Assignment) -> Accept | Reject | None:
        """None for an attempt admitted: it is accepted (reported running) if it still runs
        ``ACCEPT_DELAY`` after it started (its turn came, under a lease), so it shows as
        placed until then. The coordinator places again only an attempt neither accepted
        nor listed by a heartbeat for two heartbeat intervals."""
        if a.ref in self._attempts:  # a re-sent assignment: same answer, not a second run
            return Accept(ref=a.ref, worker=self.name)
        if not self._executor.has_task(a.task_name):
            reason = f"this agent has no task named {a.task_name!r}"
            log.warning("rejected", reason=reason, run=a.ref.run_id, node=a.ref.node_id)
            return Reject(ref=a.ref, worker=self.name, code="unknown_task", reason=reason)
        refusal = self._guard_admit(a)
        if refusal is not None:
            log.warning("rejected", code=refusal.code, reason=refusal.reason, attempt=a.ref.key)
            return Reject(ref=a.ref, worker=self.name, code=refusal.code, reason=refusal.reason)
        turn = None if a.lease is None else self._leases.join(a.lease)
        waits = a.lease is not None and self._leases.behind(a.lease)
        if waits:
            self._queued.add(a.ref)
        self._attempts[a.ref] = asyncio.create_task(self._run(a, turn))
        return None

    def _guard_admit(self, a: Assignment) -> Refusal | None:
        """A reservation of its own, or the one its lease holds here already."""
        if a.lease is not None and self._leases.active(a.lease):
            if self._guard.draining:
                return Refusal("draining", "the agent is draining and takes no new work")
            return None
        return self._guard.admit(a, a.lease)

    def _release(self, a: Assignment) -> None:
        if a.lease is None:
            self._guard.release(a.ref)
        elif self._leases.leave(a.lease):
            self._guard.release(a.lease)

    def _cancel(self, ref: AttemptRef, reason: str) -> None:
        if self._executor.cancel(ref, reason):
            log.info("cancelling", attempt=ref.key, reason=reason)
        elif ref in self._attempts:
            self._early_cancels[ref] = reason
        else:
            log.info("cancel for an attempt not running here", attempt=ref.key)

    async def _run(self, a: Assignment, turn: asyncio.Lock | None) -> None:
        """Under a lease, once the attempts admitted before it under the lease have ended."""
        async with turn or contextlib.nullcontext():
            self._queued.discard(a.ref)
            loop = asyncio.get_running_loop()
            accept = loop.call_later(ACCEPT_DELAY, self._accept_if_running, a.ref)
            try:
                await self._attempt(a)
            finally:  # an idle agent would wake for it after each short attempt
                accept.cancel()

    def _accept_if_running(self, ref: AttemptRef) -> None:
        """An attempt is reported running only if it still runs a moment after it started:
        a short one's outcome says so itself."""
        if ref in self._attempts:
            accepted = encode_each([Accept(ref=ref, worker=self.name)])
            self._spawn(self._publish(self._subjects.ack(self.name), accepted))

    async def _attempt(self, a: Assignment) -> None:
        verbose = info_enabled(__name__)
        if verbose:
            _bound(a).info("running", task=a.task_name, gpu_devices=list(a.gpu_devices))
        started = self._clock()
        try:
            a = await self._resolve(a)
            reason = self._early_cancels.pop(a.ref, None)
            if reason is None and a.after is not None:
                a, reason = await self._chained(a)
            if reason is not None:
                outcome = self._ended(a, started, "cancelled", "AttemptCancelled", reason)
            else:
                outcome = await self._externalise(await self._executor.run(a))
        except PayloadError as exc:  # a value gone or altered: the reason says it all
            _bound(a).warning("attempt could not run", error=str(exc))
            outcome = self._ended(a, started, "failed", type(exc).__name__, str(exc))
        except Exception as exc:
            _bound(a).exception("attempt could not run")
            outcome = self._ended(a, started, "failed", type(exc).__name__, str(exc))
        finally:
            self._release(a)
            del self._attempts[a.ref]
            self._early_cancels.pop(a.ref, None)
        if verbose:
            _bound(a).info("finished", status=outcome.status, duration=round(outcome.duration, 6))
        if outcome.error is not None:
            error = outcome.error.clipped(ERROR_TEXT_LIMIT)
            outcome = outcome.model_copy(update={"error": error})
        answer = self._answer_to(a.reply) if outcome.status == "succeeded" else None
        if answer is not None:
            self._answers[outcome.ref] = answer
            outcome = outcome.model_copy(update={"answered": True})
        if a.lease is not None:
            self._upstreams.ended(outcome)
        self._outbox.put(outcome)

    async def _chained(self, a: Assignment) -> tuple[Assignment, str | None]:
        """A chained attempt with the values its upstream returned here put in; or why it
        ends unrun (``chains.py``)."""
        assert a.after is not None
        up = self._upstreams.take(a.after)
        if isinstance(up, str):
            return a, up
        data = up.value_json()
        try:
            if up.return_ref is not None:
                value = await self._payloads().load(up.return_ref)
            else:
                value = None if data is None else decode_value(data)
        except PayloadError as exc:  # not this attempt's failure: placed again later
            return a, f"its upstream's value could not be read: {exc}"
        values = taken(a.after, value)
        if isinstance(values, str):
            return a, values
        return a.resolved(values), None

    def _answer_to(self, inbox: str | None) -> str | None:
        """Where the submitter of a one-node run hears its success from here, without
        waiting for the outcome to be stored, applied and pushed: the outbox sends it with
        the outcome (``_store_outcomes``), and the coordinator's record follows (its push
        to the submitter is then left out)."""
        if inbox is None:
            return None  # a node of a larger run: the coordinator ends the run
        try:
            return self._subjects.direct(inbox, self.name)
        except SubjectError:
            return None  # not a client inbox: the stored outcome is the only answer

    def _ended(self, a: Assignment, started: float, status: str, kind: str, text: str) -> Outcome:
        return Outcome.model_validate(
            {
                "ref": a.ref,
                "worker": self.name,
                "status": status,
                "error": ErrorInfo(type=kind, message=text),
                "started_at": started,
                "finished_at": max(started, self._clock()),
            }
        )

    # -- payloads and outcomes -----------------------------------------------------------

    def _payloads(self) -> PayloadStore:
        if self._store is None:
            assert self._nc is not None
            kept = KeptPayloads(self.settings.payload_cache)
            self._store = PayloadStore(self._nc, self._subjects, kept=kept)
        return self._store

    async def _resolve(self, a: Assignment) -> Assignment:
        if not a.arg_refs:
            return a
        store = self._payloads()
        values = await asyncio.gather(*(store.load(ref) for ref in a.arg_refs.values()))
        return a.resolved(dict(zip(a.arg_refs, values, strict=True)))

    async def _externalise(self, outcome: Outcome) -> Outcome:
        """A value too large for a message goes to the payload stream, as the JSON bytes the
        executor encoded (``Outcome.value_json``); a small one stays in the outcome."""
        data = outcome.value_json()
        if data is None:
            return outcome
        assert self._nc is not None
        limit = min(self.settings.inline_limit, self._nc.max_payload - 64 * 1024)
        if len(data) <= limit:
            return outcome
        ref = await self._payloads().save(data)
        return outcome.model_copy(update={"return_value": None, "return_ref": ref})

    async def _store_outcomes(self, outcomes: list[Outcome]) -> None:
        """One JetStream message per chunk that fits the server's payload limit; before,
        the direct answers of these outcomes, in the same bytes, one message per submitter:
        sent together, they cost the agent one socket write (each wakes nats-server, ~0.1
        ms here) and the client one message, instead of one each per task. One that could
        not be sent is stored as not answered."""
        assert self._nc is not None
        assert self._js is not None
        js, limit = self._js, self._nc.max_payload // 2
        encoded = [(outcome, encode(outcome)) for outcome in outcomes]
        answers: dict[str, list[int]] = {}
        for index, (outcome, _) in enumerate(encoded):
            subject = self._answers.pop(outcome.ref, None)
            if subject is not None:
                answers.setdefault(subject, []).append(index)
        for subject, indexes in answers.items():
            if not await self._publish(subject, join_encoded([encoded[i][1] for i in indexes])):
                for index in indexes:
                    unanswered = encoded[index][0].model_copy(update={"answered": False})
                    encoded[index] = (unanswered, encode(unanswered))
                    self._outbox.put(unanswered)  # what a retry of this batch stores
        chunks = size_chunks(encoded, lambda item: len(item[1]), limit)
        await send_all(chunks, functools.partial(self._store_chunk, js))

    async def _store_chunk(self, js: JetStreamContext, chunk: list[tuple[Outcome, bytes]]) -> None:
        """The message id is a digest of the content: a retried publish of the same chunk is
        stored once, while a second execution of the same attempt (a coordinator that
        restarted and sent it again) has other timestamps, so its outcome is not dropped."""
        if len(chunk) == 1:
            ref = chunk[0][0].ref
            subject = self._subjects.outcome(self.name, ref.run_id, ref.node_id)
        else:
            subject = self._subjects.worker_outcomes(self.name)
        data = join_encoded([d for _, d in chunk])
        msg_id = hashlib.sha1(data).hexdigest()
        await publish_stored(js, subject, data, timeout=PUBLISH_TIMEOUT, headers={MSG_ID: msg_id})

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def _wait_for(tasks: set[asyncio.Task[None]], within: float, force: asyncio.Event) -> None:
    """Until the tasks end, ``within`` seconds pass, or ``force`` is set (a second signal)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    forced = asyncio.create_task(force.wait())
    remaining = set(tasks)
    try:
        while remaining and not forced.done() and (left := deadline - loop.time()) > 0:
            done, _ = await asyncio.wait(
                {*remaining, forced}, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            remaining -= done
    finally:
        forced.cancel()
