"""The coordinator on NATS: messages in become scheduler events, decisions become messages.

One pump task owns the scheduler. Everything that arrives (agent adverts and
acks on core NATS, submissions and outcomes from JetStream, timer ticks, CLI
cancels) is queued; the pump takes all that is waiting at once, applies it,
lets the scheduler decide, then sends the decisions in as few messages as it
can (one ``Batch`` of assignments per worker), writes the changed runs to KV
and only then acknowledges the JetStream messages it applied. A crash before
that ack makes JetStream deliver them again; applying twice is harmless
because the scheduler ignores known submissions and superseded outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from coordinator import authority, metrics
from coordinator.checkpoint import Checkpointer
from coordinator.control import Control
from coordinator.heap import Freezer
from coordinator.leadership import LeaseTiming
from coordinator.lease import LeaseKeeper
from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.scheduling.machine import Decisions, Scheduler, SchedulerConfig
from coordinator.scheduling.views import take_update
from coordinator.store import RunStore
from coordinator.turns import Turns
from shared.jetstream import Retention, ensure_streams
from shared.logging import DropLog, info_enabled
from shared.payloads import ensure_payloads
from shared.wire.protocol import (
    TERM_HEADER,
    Accept,
    Batch,
    Cancel,
    Deregister,
    Heartbeat,
    MessageModel,
    Outcome,
    Pace,
    ProtocolError,
    Register,
    Reject,
    Reregister,
    decode,
    decode_each,
    encode,
    encode_each,
    join_encoded,
    size_chunks,
)
from shared.wire.runs import CoordinatorView, Refused, RunUpdate, RunView, Submit, parse_submits
from shared.wire.subjects import SubjectError, Subjects, token

log = structlog.get_logger(__name__)

DURABLE = "fleet-coordinator"
ACK_WAIT = 5.0
FINAL_FLUSH = 5.0
"""On stop, how long to try a last checkpoint; unwritten state is rebuilt on restart."""
Event = tuple[str, Any, Msg | None]
MAX_BATCH = 256
"""Events other than agents' control messages taken into one pump iteration at most."""
TOLD_WITHIN = 0.1
"""Seconds at most that the end of a run its agent told the submitter of waits before it
goes to the run's subject (for followers in other processes, and the dashboard): it goes
with the next message this coordinator sends anyway, or after this. A socket write costs
its sender more here than the rest of a one-task round trip's work in the coordinator."""
YIELD_EVERY = 16
"""Junk messages dropped at the edge between two yields to the event loop: under a flood,
NATS's socket reader gets a turn often enough that a heartbeat behind the junk is read,
decoded and applied within a tick or two. (Events applied give it one by time: ``Turns``.)"""
FLOW_REPLIES = "$JS.FC."
"""Where JetStream's flow control requests are answered; nothing else is published to."""
FLOW_HEARTBEAT = 5.0
"""Seconds between the idle heartbeats JetStream requires with flow control (one names a
flow control request that went unanswered, which is then answered)."""
ERROR_CHARS = 200
"""Characters of a dropped message's error kept in its log line."""
BACKLOG_MSGS = 8
"""Agents' messages waiting unread (in NATS's queues for the agent subscriptions, or decoded
for the pump) above which the coordinator is behind: silence then is not yet heard
(``liveness.backlog_credit``)."""
ASK_REGISTER = encode(Reregister(reason="the coordinator lacks this agent's task set"))
NEW_TERM = encode(Reregister(reason="a new leader starts its term"))


@dataclass
class _Edge:
    """Per coordinator: agents' decoded control messages waiting for the pump, and the
    sampled logs of what was dropped."""

    control: list[Event] = field(default_factory=list)
    agents: list[Subscription] = field(default_factory=list)
    """The subscriptions agents' control messages come on (their queues show a backlog)."""
    drops: DropLog = field(default_factory=lambda: DropLog(log, "dropped a malformed message"))
    failures: DropLog = field(
        default_factory=lambda: DropLog(log, "event could not be applied; dropped")
    )


def _clip(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS] + "..."


@dataclass(frozen=True, slots=True)
class CoordinatorSettings:
    subjects: Subjects = field(default_factory=Subjects)
    policy: str | None = None
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    tick: float = 0.1
    adopt_grace: float = 10.0
    """After a restart: how long to wait for an agent to report an in-flight attempt."""
    retention: Retention = field(default_factory=Retention)
    """What the submissions and outcomes streams and the finished runs keep (age, count,
    bytes); applied when they are created and set again at every start."""
    lease: LeaseTiming = field(default_factory=LeaseTiming)
    """The leader lease of ``coordinator/standby.py``."""


class Coordinator:
    """One term of the leader (``coordinator/standby.py`` runs one per term won). Without a
    ``lease`` it acts for as long as it runs (tests)."""

    def __init__(
        self,
        settings: CoordinatorSettings = CoordinatorSettings(),
        *,
        clock: Callable[[], float] = time.time,
        lease: LeaseKeeper | None = None,
        expect: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self._lease = lease
        self.term = lease.term if lease is not None else 0
        self._expect = expect or []
        """Workers heard from before this term: asked to register at once."""
        self._term = {TERM_HEADER: str(self.term)}
        self._replay_until = 0
        """The last outcome stored before this term, until it has been applied."""
        self._submit_replay_until = 0
        """The last submission stored before this term: one up to it may have run."""
        self.subjects = settings.subjects
        self.scheduler = Scheduler(
            ResourceAwareWorkerPool(policy=settings.policy),
            settings.scheduler.ticking(settings.tick),
            incarnation=secrets.token_hex(8),  # this lifetime's attempts are its own
        )
        self._clock = clock
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._nc: Client | None = None
        self._store: RunStore | None = None
        self._checkpoints: Checkpointer | None = None
        self._edge = _Edge()
        self._turns = Turns()
        self._answered: set[str] = set()
        """Runs whose agent told the submitter of their end in this pass (``Outcome.answered``)."""
        self._told: list[tuple[str, bytes]] = []
        """Ends of runs told their submitters, for the runs' subjects (``TOLD_WITHIN``)."""
        self._told_since = 0.0
        self.dropped = 0

    # -- NATS connection callbacks -----------------------------------------------------------

    async def disconnected(self) -> None:
        """No heartbeat can arrive now: silence stops counting until the connection is back."""
        log.warning("disconnected from NATS; no worker is judged lost until it is back")
        self.scheduler.suspended(self._clock())

    async def reconnected(self) -> None:
        """The time it was down is not silence; every worker gets a grace to be heard."""
        log.info("reconnected to NATS; workers get a grace to be heard from again")
        self.scheduler.resumed(self._clock())

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, nc: Client, stop: asyncio.Event) -> None:
        self._nc = nc
        js = nc.jetstream()
        await ensure_streams(js, self.subjects, self.settings.retention)
        await ensure_payloads(js, self.subjects, enforce=True)
        self._store = store = await RunStore.open(js, self.subjects, self.settings.retention.runs)
        self._checkpoints = Checkpointer(store, self.scheduler, may_act=self.may_act)
        await self._restore(store)
        control = Control(self, store)
        s = self.subjects
        subs = [
            *await self._listen_to_agents(nc),
            await nc.subscribe(s.all_ctl, cb=control.handle),
        ]
        subs += [
            await self._consume(js, s.submissions_stream, s.submit, "submit"),
            await self._consume(js, s.outcomes_stream, s.all_outcomes, "outcome"),
        ]
        tasks = [
            asyncio.create_task(self._checkpoints.run()),
            asyncio.create_task(self._ticks()),
            asyncio.create_task(self._pump()),
        ]
        for name in self._expect:  # their registrations say what they run: settled sooner
            await nc.publish(s.reregister(name), NEW_TERM)
        log.info("coordinator serving", runs=len(self.scheduler.runs), term=self.term)
        try:
            await stop.wait()
        finally:
            for sub in subs:
                await sub.unsubscribe()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                for subject, data in self._told:
                    await nc.publish(subject, data)
            with contextlib.suppress(Exception):
                if self.may_act():
                    await asyncio.wait_for(self._checkpoints.flush(everything=True), FINAL_FLUSH)

    async def _restore(self, store: RunStore) -> None:
        now = self._clock()
        # Nothing is placed until the outcomes stored before this term are applied (a node
        # whose outcome waits there must not run again): ``_consume`` says when.
        self.scheduler.start(now, ACK_WAIT + 1.0, expect=self._expect)
        resumed: list[str] = []
        live = await store.live()
        queued = await store.queued({stored.view.run_id for stored in live})
        for stored in [*live, *queued.runs]:
            try:
                self.scheduler.restore(stored.submit, stored.view, now, self.settings.adopt_grace)
            except Exception as exc:  # one bad record must not stop every start
                raw = stored.model_dump_json().encode()
                await store.set_aside(stored.view.run_id, raw, f"{type(exc).__name__}: {exc}")
                continue
            resumed.append(stored.view.run_id)
        assert self._checkpoints is not None
        alive = set(resumed)
        records = {k: [r for r in runs if r in alive] for k, runs in queued.records.items()}
        self._checkpoints.restored([s.view.run_id for s in live if s.view.run_id in alive], records)
        if self.scheduler.runs:
            log.info("resumed runs", count=len(resumed), first=sorted(resumed)[:20])

    def enqueue(self, kind: str, payload: Any) -> None:
        self._queue.put_nowait((kind, payload, None))

    # -- inputs ------------------------------------------------------------------------------

    async def _listen_to_agents(self, nc: Client) -> list[Subscription]:
        s = self.subjects
        subjects = (s.all_registers, s.all_heartbeats, s.all_deregisters, s.all_acks)
        subs = [await nc.subscribe(subject, cb=self._on_core) for subject in subjects]
        self._edge.agents = subs
        return subs

    def _behind(self) -> bool:
        """Agents' messages wait unread: in NATS's queues of the agent subscriptions, or
        decoded and not yet taken by the pump."""
        edge = self._edge
        waiting = len(edge.control) + sum(sub.pending_msgs for sub in edge.agents)
        return waiting > BACKLOG_MSGS

    async def _on_core(self, msg: Msg) -> None:
        """Decoded here, at the edge: junk is counted and dropped before it reaches the pump,
        and what an agent says (adverts, answers) waits in its own list, which the pump
        applies before anything else, so no flood on any subject holds back a heartbeat."""
        try:
            self.subjects.parse_sender(msg.subject)  # the subject names the sender
            decoded = decode(msg.data)
        except (ProtocolError, SubjectError) as exc:
            self.dropped += 1
            self._edge.drops.drop("core", subject=msg.subject, error=_clip(exc))
            if self.dropped % YIELD_EVERY == 0:  # not after each: junk would drain slowly
                await asyncio.sleep(0)
            return
        edge = self._edge
        if not edge.control:
            self._queue.put_nowait(("wake", None, None))  # a pump waiting for input
        edge.control.append(("control", (msg.subject, decoded), None))

    async def _consume(self, js: JetStreamContext, stream: str, subject: str, kind: str) -> Any:
        """A durable push consumer of this term's own: messages arrive as soon as they are
        stored (a pull's batching would hold them back). It starts where the consumers of
        earlier terms (or of a coordinator that died) got every message acknowledged, so
        what they received and had not acknowledged comes again at once, not after
        ``ack_wait``; then theirs are deleted, and a deposed leader receives nothing more
        (a push consumer cannot be taken over while its old subscriber still listens).

        It is flow controlled: JetStream sends a flow control request among the messages
        now and then and no more than a window beyond it until it is answered, and the pump
        answers it only once it has applied everything before it. Without that, JetStream
        pushed a deep queue's whole backlog at once, and past 64 MB unread the server closed
        the coordinator's connection as a slow consumer, again after each reconnect."""
        name, earlier, start = f"{DURABLE}-{kind}-t{self.term}", [], 0
        for info in await js.consumers_info(stream):
            consumer = info.name or ""
            if consumer.startswith(f"{DURABLE}-{kind}") and consumer != name:
                earlier.append(consumer)
                floor = info.ack_floor.stream_seq if info.ack_floor else 0
                start = floor + 1 if not start else min(start, floor + 1)
        if kind == "submit":
            self._submit_replay_until = (await js.stream_info(stream)).state.last_seq
        if kind == "outcome":
            last = (await js.stream_info(stream)).state.last_seq
            self._replay_until = last if last >= max(start, 1) else 0
            if not self._replay_until:
                self.scheduler.replayed(self._clock())
        nc = self._client()
        inbox = nc.new_inbox()

        async def deliver(msg: Msg) -> None:
            headers = msg.headers
            if headers and headers.get(api.Header.STATUS) == api.StatusCode.CONTROL_MESSAGE:
                reply = msg.reply or headers.get(api.Header.CONSUMER_STALLED) or ""
                if reply.startswith(FLOW_REPLIES):  # once the pump applied what came before
                    self._queue.put_nowait(("flow", reply, None))
                return  # an idle heartbeat
            self._queue.put_nowait((kind, msg, msg))

        sub = await nc.subscribe(inbox, cb=deliver, pending_msgs_limit=-1, pending_bytes_limit=-1)
        policy = api.DeliverPolicy.BY_START_SEQUENCE if start else api.DeliverPolicy.ALL
        config = api.ConsumerConfig(
            durable_name=name,
            deliver_subject=inbox,
            filter_subject=subject,
            ack_policy=api.AckPolicy.EXPLICIT,
            max_ack_pending=-1,
            ack_wait=ACK_WAIT,
            flow_control=True,
            idle_heartbeat=FLOW_HEARTBEAT,
            deliver_policy=policy,
            opt_start_seq=start or None,
        )
        await js.add_consumer(stream, config)
        for consumer in earlier:
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(stream, consumer)
        return sub

    def coordinators(self) -> list[CoordinatorView]:
        """This leader and the standbys it has heard of, for ``fleet workers``."""
        if self._lease is None:
            return []
        me = self._lease.lease.me
        others = [p.name for p in self._lease.members if p.id != me]
        leader = CoordinatorView(name=self._lease.name, role="leader", term=self.term)
        return [leader, *(CoordinatorView(name=n, role="standby") for n in others)]

    def may_act(self) -> bool:
        """Whether this coordinator holds the lease now (always, without one)."""
        return self._lease is None or self._lease.valid()

    async def _until_may_act(self) -> None:
        """A lease not renewed in time (NATS slow or away, this process paused): act on
        nothing until it is renewed, or until the term ends and cancels the pump."""
        if self.may_act():
            return
        assert self._lease is not None
        log.warning("lease not renewed in time; waiting before acting", term=self.term)
        while not self.may_act():
            self._lease.renewed.clear()
            await self._lease.renewed.wait()

    async def _ticks(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick)
            self._queue.put_nowait(("tick", None, None))

    # -- the pump ----------------------------------------------------------------------------

    async def _pump(self) -> None:
        with Freezer() as freezer:
            while True:
                batch = await self._next_batch()
                try:
                    await self._apply(batch)
                except Exception:
                    log.exception("pump iteration failed")
                freezer.settle(len(self.scheduler.runs))

    async def _next_batch(self) -> list[Event]:
        """What an agent said first, then at most ``MAX_BATCH`` other events: one pump
        iteration stays short under a flood, and control messages wait for one at most."""
        edge, rest = self._edge, []
        if not edge.control:
            waits = self._queue.empty()
            rest.append(await self._queue.get())
            if waits:
                self._turns.rested()
        while len(rest) < MAX_BATCH and not self._queue.empty():
            rest.append(self._queue.get_nowait())
        control, edge.control = edge.control, []
        return control + rest

    async def _apply(self, batch: list[Event]) -> None:
        await self._until_may_act()
        started = time.perf_counter()
        now = self._clock()
        self.scheduler.inbound(self._behind())  # unread heartbeats are not silence
        acks: list[tuple[Msg, set[str]]] = []
        for kind, payload, msg in batch:
            runs = await self._apply_one(kind, payload, msg, now)
            if msg is not None:
                acks.append((msg, runs))
            await self._turns.take()  # the socket's reader, and heartbeats behind a flood
        self.scheduler.tick(now)
        decisions = self.scheduler.take()
        metrics.after_pass(self.scheduler, decisions, time.perf_counter() - started)
        await self._send(decisions)
        assert self._checkpoints is not None
        self._checkpoints.mark(decisions.changed, decisions.finished, acks)

    async def _apply_one(self, kind: str, payload: Any, msg: Msg | None, now: float) -> set[str]:
        """One event; returns the runs its acknowledgement waits for. What cannot be
        applied is counted and dropped, logged in sampled lines (``DropLog``)."""
        try:
            if kind == "submit":
                return await self._submissions(payload, now)
            if kind == "control":
                subject, decoded = payload
                self._core(subject, decoded, now)
                return set()
            if kind == "flow":
                await self._client().publish(payload)
                return set()
            return self._event(kind, payload, now)
        except ProtocolError as exc:
            self.dropped += 1
            subject = "" if msg is None else msg.subject
            self._edge.drops.drop(kind, subject=subject, error=_clip(exc))
            if kind == "submit":
                run_id = (msg.headers or {}).get("Fleet-Run", "") if msg is not None else ""
                await self._refuse(run_id, str(exc))
        except Exception as exc:  # a bug must not cost the other events of the batch
            self.dropped += 1
            self._failed(kind, exc)
        return set()

    def _failed(self, kind: str, exc: Exception) -> None:
        """A bug's first traceback in full; later ones of a flood only counted, sampled."""
        edge = self._edge
        if edge.failures.total == 0:
            log.exception("event could not be applied; dropped", source=kind)
        edge.failures.drop(kind, error=f"{type(exc).__name__}: {_clip(exc)}")

    async def _submissions(self, payload: Msg, now: float) -> set[str]:
        """Apply the submissions in one message; returns the runs it names. A run id that
        already finished (its final record is still stored) is not run again: the
        submitter gets that run's final view, even after a restart."""
        runs: set[str] = set()
        items = [
            parsed if isinstance(parsed, Refused) else self._notify_checked(parsed)
            for parsed in parse_submits(payload.data)
        ]
        finished = await self._finished_before(items, self._delivered_again(payload))
        for item in items:
            if isinstance(item, Refused):
                self.dropped += 1
                log.warning("refused a submission", run=item.run_id or None, error=item.error)
                await self._refuse(item.run_id, item.error, item.notify)
            elif item.run_id in finished:
                await self._answer_finished(item, finished[item.run_id])
            else:
                self.scheduler.submit(item, now)
                runs.add(item.run_id)
            await self._turns.take()  # one message may carry a thousand runs
        return runs

    def _delivered_again(self, msg: Msg) -> bool:
        """A submission message seen before (by this term or an earlier one): its runs may
        have run, whatever their ``fresh`` says."""
        try:
            meta = msg.metadata
        except Exception:  # not from a consumer: nothing says it is new
            return True
        return meta.num_delivered > 1 or meta.sequence.stream <= self._submit_replay_until

    async def _finished_before(
        self, items: list[Submit | Refused], again: bool
    ) -> dict[str, RunView]:
        """The stored final views of the submitted run ids the scheduler does not hold
        (not looked up for a fresh id delivered for the first time)."""
        unknown = {
            i.run_id
            for i in items
            if isinstance(i, Submit)
            and i.run_id not in self.scheduler.runs
            and (again or not i.fresh)
        }
        if self._store is None or not unknown:
            return {}
        try:
            return await self._store.finished(sorted(unknown))
        except Exception as exc:  # NATS hiccup: run them rather than lose the submission
            log.warning("could not check for finished runs", runs=len(unknown), error=_clip(exc))
            return {}

    async def _answer_finished(self, submit: Submit, view: RunView) -> None:
        """A finished run's id submitted again: its end, as it was pushed when it ended."""
        log.info("submission of a finished run not run again", run=submit.run_id)
        update = RunUpdate(run_id=view.run_id, status=view.status, run=view)
        await self._publish_update(update, submit.notify)

    def _notify_checked(self, submit: Submit) -> Submit | Refused:
        """The coordinator publishes a run's updates on ``notify``: only a client inbox may
        be named there, or a client could make it publish on an agent's subjects."""
        notify = submit.notify
        if notify is None or self._is_client_inbox(notify):
            return submit
        inbox = f"{self.subjects.prefix}.client.<id>"
        return Refused(submit.run_id, None, f"notify {notify!r} is not a client inbox ({inbox})")

    def _is_client_inbox(self, subject: str) -> bool:
        try:
            self.subjects.parse_client_inbox(subject)
        except SubjectError:
            return False
        return True

    def _event(self, kind: str, payload: Any, now: float) -> set[str]:
        """Apply one event; returns the runs an acknowledgement must wait for."""
        sched = self.scheduler
        if kind == "outcome":
            return self._outcomes(payload, now)
        elif kind == "cancel":
            run_id, reason = payload
            sched.cancel_run(run_id, reason, now)
        elif kind == "limit":
            log.info("global parallelism cap changed", max_parallel=payload)
            sched.set_max_parallel(payload)
        return set()

    def _outcomes(self, msg: Msg, now: float) -> set[str]:
        """Apply the outcomes stored on one agent's subject that are that agent's to
        report (``authority.outcome_refusal``); returns the runs they name."""
        sched = self.scheduler
        try:
            sender = self.subjects.parse_outcome_sender(msg.subject)
        except SubjectError as exc:
            raise ProtocolError("type", str(exc)) from None
        outcomes = decode_each(msg.data, Outcome)
        settled = sched.settled(now)
        for outcome in outcomes:
            held = authority.holding(sched, outcome.ref)
            why = authority.outcome_refusal(sender, outcome, held, settled)
            if why is not None:
                self._unauthorised(msg.subject, why)
                continue
            sched.outcome(outcome, now)
            if outcome.answered:
                self._answered.add(outcome.ref.run_id)
        self._replaying(msg, now)  # after: these too were stored before the term
        return {o.ref.run_id for o in outcomes}

    def _replaying(self, msg: Msg, now: float) -> None:
        """The outcome stored last before this term began is being applied: every earlier
        one was (the consumer delivers in order), so placing may start."""
        if self._replay_until and msg.metadata.sequence.stream >= self._replay_until:
            self._replay_until = 0
            self.scheduler.replayed(now)

    def _unauthorised(self, subject: str, why: str) -> None:
        self.dropped += 1
        log.warning("dropped a message its sender may not send", subject=subject, reason=why)

    def _core(self, subject: str, msg: MessageModel, now: float) -> None:
        """Control traffic from the agent its subject names, and only what that agent may
        say (``authority.control_refusal``, ``authority.answer_refusal``)."""
        try:
            kind, sender = self.subjects.parse_sender(subject)
        except SubjectError as exc:
            raise ProtocolError("type", str(exc)) from None
        for item in msg.items if isinstance(msg, Batch) else (msg,):
            why = authority.control_refusal(kind, sender, item)
            if why is None and isinstance(item, Accept | Reject):
                why = authority.answer_refusal(sender, authority.holding(self.scheduler, item.ref))
            if why is not None:
                self._unauthorised(subject, why)
            else:
                self._control(item, now)

    def _control(self, item: MessageModel, now: float) -> None:
        sched = self.scheduler
        if isinstance(item, Heartbeat):
            sched.heartbeat(item, now)
        elif isinstance(item, Register):
            log.info(
                "worker registered",
                worker=item.worker,
                cpu=item.spec.cpu,
                ram_mb=item.spec.ram_mb,
                gpus=len(item.spec.gpus),
            )
            sched.register(item, now)
        elif isinstance(item, Accept):
            sched.accepted(item.ref, now)
        elif isinstance(item, Reject):
            log.warning(
                "assignment rejected",
                worker=item.worker,
                run=item.ref.run_id,
                node=item.ref.node_id,
                attempt=item.ref.attempt,
                code=item.code,
                reason=item.reason,
            )
            sched.rejected(item, now)
        elif isinstance(item, Deregister):
            log.info("worker left", worker=item.worker, reason=item.reason)
            sched.worker_left(item.worker, "deregistered", now)
        else:
            raise ProtocolError("type", f"a {item.type!r} message is not for the coordinator")

    async def _refuse(self, run_id: str, error: str, notify: str | None = None) -> None:
        """Tell the submitter why, on its run's subject (and its inbox), if the run id can
        be read."""
        with contextlib.suppress(ValueError, TypeError):
            token(run_id)
            view = RunView(run_id=run_id, status="failed", error=f"submission refused: {error}")
            if notify and not self._is_client_inbox(notify):
                notify = None  # not a subject to answer on; the run's subject still is
            await self._publish_update(RunUpdate(run_id=run_id, status="failed", run=view), notify)

    # -- outputs -----------------------------------------------------------------------------

    def _client(self) -> Client:
        assert self._nc is not None
        return self._nc

    async def _tell_workers(self, d: Decisions) -> None:
        nc, s = self._client(), self.subjects
        for name in d.reregister:  # asked again at its next heartbeat if this is lost
            await nc.publish(s.reregister(name), ASK_REGISTER)
        if d.pace:  # a lost one: that agent beats at its own interval, and is judged so
            pace = encode(Pace(interval=self.scheduler.pace))
            for name in d.pace:
                await nc.publish(s.pace(name), pace)

    async def _send(self, d: Decisions) -> None:
        nc, s = self._client(), self.subjects
        limit = nc.max_payload // 2
        for worker, assignments in d.assign.items():  # one message per worker, if it fits
            encoded = [encode(a) for a in assignments]
            for chunk in size_chunks(encoded, len, limit):
                await nc.publish(s.assign(worker), join_encoded(chunk), headers=self._term)
        for worker, cancels in d.cancel.items():
            items = [Cancel(ref=ref, reason=reason) for ref, reason in cancels]
            await nc.publish(s.cancel(worker), encode_each(items), headers=self._term)
        await self._tell_workers(d)
        for name in set(d.name_clashes):
            log.error(
                "adverts from an older agent process under a name in use; ignored "
                "(two hosts with one --name?)",
                worker=name,
            )
        for name, reason in d.lost_workers:
            if reason != "deregistered":
                log.warning("worker lost", worker=name, reason=reason)
        sent = bool(d.assign or d.cancel or d.reregister or d.pace)
        for run_id in d.changed:
            sent = await self._push_update(run_id) or sent
        self._answered.clear()
        if self._told and (sent or time.monotonic() - self._told_since >= TOLD_WITHIN):
            told, self._told = self._told, []
            for subject, data in told:
                await nc.publish(subject, data)

    async def _push_update(self, run_id: str) -> bool:
        """Changed nodes to the submitter (when it wants progress), and the end to anyone
        (later, ``TOLD_WITHIN``, when its agent told the submitter); whether it sent."""
        run = self.scheduler.runs.get(run_id)
        update, _ = take_update(self.scheduler, run_id)
        if run is None or update is None:
            return False
        if update.run is not None and info_enabled(__name__):
            log.info("run finished", run=run_id, status=run.status, error=run.error or None)
        if update.status == "succeeded" and run_id in self._answered:
            if not self._told:
                self._told_since = time.monotonic()
            self._told.append((self.subjects.run_updates(run_id), encode(update)))
            return False
        await self._publish_update(update, run.submit.notify)
        return True

    async def _publish_update(self, update: RunUpdate, notify: str | None) -> None:
        """To the submitter's inbox (or the run's subject when it named none); a run's end
        also to the run's subject, for followers in other processes."""
        nc, subject = self._client(), self.subjects.run_updates(update.run_id)
        data = encode(update)
        await nc.publish(notify or subject, data)
        if notify and update.run is not None:
            await nc.publish(subject, data)
