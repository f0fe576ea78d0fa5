"""``CoordinatorClient``: submit DAGs, follow runs, list workers, cancel.

A client listens on its run's subject *before* it submits, so no update can be
missed, and the final ``RunUpdate`` carries the whole run: waiting for a result
is one pushed message, not polling. A run that ended before anyone listened is
read from the coordinator (``status``), which falls back to the KV store.

A push is core NATS: one sent while the client was reconnecting is lost. So a handle
still waiting asks the coordinator for its run when the client's connection comes back
(``CoordinatorClient.reconnected``), and also every 10 to 30 s (jittered, so many waiting
clients do not ask at once), so a push lost any other way cannot keep it waiting for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
import uuid
from collections.abc import Coroutine, Mapping
from typing import Any, Self

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from pydantic import JsonValue

from shared.connection import (
    NatsSettings,
    connect,
    fleet_prefix,
    inbox_prefix,
    library_settings,
)
from shared.dag import Dag, Node, RunOptions
from shared.jetstream import INLINE_LIMIT, MSG_ID, encode_value, publish_stored, send_all
from shared.payloads import PayloadStore
from shared.wire.protocol import (
    Outcome,
    PayloadRef,
    ProtocolError,
    decode_each,
    decode_model,
    encode,
    size_chunks,
)
from shared.wire.runs import (
    CoordinatorView,
    CtlReply,
    CtlRequest,
    NodeView,
    RunUpdate,
    RunView,
    Submit,
    SubmitBatch,
    WorkerView,
)
from shared.wire.subjects import SubjectError, Subjects
from taskiq_fleet.handles import FleetError, PushedRun, run_failed
from taskiq_fleet.polls import Polls

log = structlog.get_logger(__name__)

CTL_TIMEOUT = 5.0
Solo = tuple[str, str, str, str | None, float]
"""A one-node run's name, its node's id, task and one output (None: it has none), and when
it was submitted (``RunHandle._answered``): plain values, which the garbage collector does
not walk, not the node."""
SUBMIT_TIMEOUT = 5.0
SUBMIT_ATTEMPTS = 4
"""A submission's JetStream publish: seconds to wait for its acknowledgement, and tries."""
POLL_EVERY = (10.0, 30.0)
"""A waiting handle asks the coordinator for its run after a random time in this range
(seconds) without a push; a reconnect makes every waiting handle ask at once."""
POLL_SLOT = 1.0
"""Handles due to ask within the same this many seconds are woken by one timer."""


class RunHandle(PushedRun):
    """One submitted run: its updates as they come, its end, its outputs."""

    __slots__ = ("_from_start", "_poked", "_solo", "_sub", "client")

    def __init__(self, client: CoordinatorClient, run_id: str, *, from_start: bool) -> None:
        super().__init__(run_id)
        self.client = client
        self._from_start = from_start
        """Listening since before the submission: no update can have been missed."""
        self._sub: Subscription | None = None
        self._poked = False
        """A reconnect came while the handle was not pausing: it asks again at once."""
        self._solo: Solo | None = None
        """What lets a one-node run's agent's answer end it (``Solo``)."""

    async def wait(self, timeout: float | None = None) -> RunView:
        """The finished run; ``TimeoutError`` if it is still running after ``timeout``.

        Waits for the pushed end, and asks the coordinator after a reconnect and every
        ``POLL_EVERY`` seconds, so a lost push cannot keep it waiting for ever.
        """
        if not self._done.is_set():  # else no timer: a burst's kiqs mostly ended by now
            async with asyncio.timeout(timeout):
                if not self._from_start:
                    await self._ask()
                while not self._done.is_set():
                    await self._pause()
                    if not self._done.is_set():
                        await self._ask()
        await self._stop_listening()
        assert self.view is not None
        return self.view

    async def _pause(self) -> None:
        """Until the end is pushed, the connection is back, or a jittered poll interval."""
        if not self._poked:
            polls = self.client.polls
            slot = polls.add(self._done, random.uniform(*POLL_EVERY))
            try:
                await self._done.wait()
            finally:
                polls.discard(slot, self._done)
        self._poked = False

    async def _ask(self) -> None:
        try:
            view = await self.client.status(self.run_id, missing_ok=True)
        except FleetError:  # no coordinator right now: ask again later
            log.debug("run status unavailable", run=self.run_id)
            return
        if view is not None and view.done and not self._done.is_set():
            self._apply(RunUpdate(run_id=self.run_id, status=view.status, run=view))

    def _poke(self) -> None:
        self._poked = True
        self._done.wake()

    def _answered(self, outcome: Outcome) -> None:
        """The agent that ran this one-node run's node says it succeeded: that is the run's
        end, as the coordinator will record it (its push, coming later, is ignored)."""
        view = _solo_view(self.run_id, self._solo, outcome)
        if view is not None and not self._done.is_set():
            self._apply(RunUpdate(run_id=self.run_id, status=view.status, run=view))

    async def result(self, timeout: float | None = None) -> dict[str, JsonValue]:
        """Every output of a succeeded run (large ones fetched); ``RunFailed`` otherwise."""
        view = await self.wait(timeout)
        if view.status != "succeeded":
            raise run_failed(view)
        return await self.client.outputs(view)

    async def status(self) -> RunView:
        view = await self.client.status(self.run_id)
        assert view is not None
        return view

    async def cancel(self) -> None:
        await self.client.cancel(self.run_id)

    async def _stop_listening(self) -> None:
        self.client._handles.pop(self.run_id, None)
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()


class _Reconnects:
    """nats-py's ``reconnected_cb`` for a client made after its connection."""

    def __init__(self) -> None:
        self.client: CoordinatorClient | None = None

    async def reconnected(self) -> None:
        if self.client is not None:
            log.info("reconnected to NATS; waiting runs ask the coordinator")
            self.client.reconnected()


class CoordinatorClient:
    def __init__(self, nc: Client, subjects: Subjects | None = None, *, owns: bool = False) -> None:
        self.nc = nc
        self.subjects = subjects or Subjects()
        self._owns = owns
        self._inbox = self.subjects.client_inbox(uuid.uuid4().hex)
        self._inbox_sub: Subscription | None = None
        self._direct_sub: Subscription | None = None
        self._handles: dict[str, RunHandle] = {}
        self.polls = Polls(POLL_SLOT)
        self._outgoing: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self._sending = False
        self._sender_task: asyncio.Task[None] | None = None
        self._inline_limit = min(INLINE_LIMIT, nc.max_payload - 64 * 1024)
        self._payloads = PayloadStore(nc, self.subjects)
        self._js = nc.jetstream()
        """One for the connection: it subscribes for its acknowledgements once."""

    @classmethod
    async def connect(
        cls, nats: NatsSettings | str | None = None, *, prefix: str | None = None
    ) -> Self:
        """Connect as ``fleet`` would: what is not given comes from ``FLEET_NATS``, the
        other ``FLEET_NATS_*`` / ``FLEET_TLS_*`` variables and ``FLEET_PREFIX``
        (``library_settings``); a bad value is a one-line ``ConnectionSettingsError``."""
        settings = library_settings(nats)
        subjects = Subjects(fleet_prefix(prefix))
        relay = _Reconnects()
        nc = await connect(
            settings,
            name="fleet-client",
            inbox_prefix=inbox_prefix(settings),
            reconnected_cb=relay.reconnected,
        )
        client = relay.client = cls(nc, subjects, owns=True)
        return client

    def reconnected(self) -> None:
        """Every handle still waiting asks the coordinator for its run now: what was pushed
        while the connection was down is lost. ``connect`` wires this up; whoever made
        the connection passed to the constructor should call it from ``reconnected_cb``."""
        for handle in list(self._handles.values()):
            handle._poke()

    async def close(self) -> None:
        if self._owns:
            await self.nc.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- runs --------------------------------------------------------------------------------

    async def submit(
        self,
        dag: Dag,
        inputs: Mapping[str, Any] | None = None,
        *,
        name: str = "",
        options: RunOptions | None = None,
        run_id: str | None = None,
        progress: bool = True,
        **option_fields: Any,
    ) -> RunHandle:
        """Validate here (a bad DAG or missing input raises ValueError before anything is
        sent), listen, then submit durably through JetStream."""
        fresh = run_id is None
        run_id = run_id or uuid.uuid4().hex
        options = options or RunOptions(**option_fields)
        inline, refs = await self._split_inputs(dict(inputs or {}))
        submit = Submit(
            run_id=run_id,
            name=name,
            dag=dag,
            inputs=inline,
            input_refs=refs,
            options=options,
            submitted_at=0.0,
            fresh=fresh,
        )
        return await self.submit_valid(submit.model_copy(update={"progress": progress}))

    def submit_valid(self, submit: Submit) -> Coroutine[Any, Any, RunHandle]:
        """Submit an already valid ``Submit`` without checking it again; its updates come
        to this client's inbox. Encoded before the caller awaits: while the submission
        waits for JetStream's acknowledgement (a burst's kiqs all wait together), only its
        bytes are held, not its models, which the caller's garbage collector would walk."""
        run_id = submit.run_id
        data = encode(submit.model_copy(update={"notify": self._inbox}))
        if len(data) > self.nc.max_payload:
            raise FleetError(
                f"run {run_id}: its submission is {len(data):,} bytes, more than the NATS "
                f"server takes in one message ({self.nc.max_payload:,}); give large values "
                "as run inputs or kiq arguments, which travel apart"
            )
        return self._submit_encoded(run_id, data, _solo(submit))

    async def _submit_encoded(self, run_id: str, data: bytes, solo: Solo | None) -> RunHandle:
        handle = self._handles[run_id] = RunHandle(self, run_id, from_start=True)
        handle._solo = solo
        if self._inbox_sub is None:
            direct = self.subjects.direct_of(self._inbox)
            self._direct_sub = await self.nc.subscribe(direct, cb=self._on_direct)
            self._inbox_sub = await self.nc.subscribe(self._inbox, cb=self._on_update)
        try:
            await self._send_submit(run_id, data)
        except BaseException:
            self._handles.pop(run_id, None)
            raise
        return handle

    async def submit_document(self, run_id: str, document: dict[str, Any]) -> RunHandle:
        """Submit a ``Submit`` given as its JSON document (validated here)."""
        submit = Submit.model_validate(document)
        if submit.run_id != run_id:
            raise ValueError(f"the document submits run {submit.run_id!r}, not {run_id!r}")
        return await self.submit_valid(submit)

    async def _send_submit(self, run_id: str, data: bytes) -> None:
        """Submissions made while others are in flight go out together, as one JetStream
        message per batch: a burst of ``kiq`` costs a few round trips, not one each. One
        made while none is in flight is sent by its caller (a task of its own would cost a
        lone round trip two more turns of the event loop)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        item = (run_id, data, done)
        if self._sending:
            self._outgoing.append(item)
            await done
            return
        self._sending = True
        try:
            await self._publish_chunk([item])
        finally:  # what came meanwhile goes next, together
            if self._outgoing:
                self._sender_task = asyncio.create_task(self._sender())
            else:
                self._sending = False
        await done

    async def _sender(self) -> None:
        try:
            while self._outgoing:
                items, self._outgoing = self._outgoing, []
                chunks = size_chunks(items, lambda item: len(item[1]), self.nc.max_payload // 2)
                await send_all(chunks, self._publish_chunk)
        finally:
            self._sending = False

    async def _publish_chunk(self, chunk: list[tuple[str, bytes, asyncio.Future[None]]]) -> None:
        js = self._js
        if len(chunk) == 1:
            run_id, data, _ = chunk[0]
            headers = {MSG_ID: run_id, "Fleet-Run": run_id}
        else:
            data = SubmitBatch.join([d for _, d, _ in chunk])
            headers = {MSG_ID: hashlib.sha1(data).hexdigest()}
        try:
            await self._publish_durably(js, data, headers)
        except Exception as exc:
            for _, _, done in chunk:
                if not done.done():
                    done.set_exception(FleetError(f"could not submit: {exc!r}"))
        else:
            for _, _, done in chunk:
                if not done.done():
                    done.set_result(None)

    async def _publish_durably(
        self, js: JetStreamContext, data: bytes, headers: dict[str, str]
    ) -> None:
        """Publish until JetStream acknowledges, ``SUBMIT_ATTEMPTS`` times at most: a server
        busy writing a deep queue answered a publish after more than its timeout, and the
        kiq failed although a second try would have done. The message id makes a second
        copy of one that was stored after all a duplicate JetStream drops."""
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                await publish_stored(
                    js, self.subjects.submit, data, headers=headers, timeout=SUBMIT_TIMEOUT
                )
                return
            except TimeoutError:
                if attempt == SUBMIT_ATTEMPTS:
                    raise
                log.warning(
                    "submission not acknowledged in time; sending it again", attempt=attempt
                )

    async def follow(self, run_id: str) -> RunHandle:
        """A handle on a run submitted elsewhere (another process): its end is pushed here."""
        handle = RunHandle(self, run_id, from_start=False)
        handle._sub = await self.nc.subscribe(self.subjects.run_updates(run_id), cb=self._on_update)
        self._handles[run_id] = handle
        return handle

    async def _on_update(self, msg: Msg) -> None:
        with contextlib.suppress(ProtocolError):
            update = decode_model(msg.data, RunUpdate)
            handle = self._handles.get(update.run_id)
            if handle is not None:
                handle._apply(update)
                if update.run is not None:
                    self._handles.pop(update.run_id, None)

    async def _on_direct(self, msg: Msg) -> None:
        """An agent's answers to one-node runs of ours (one, or a batch of those that ended
        together); only the worker named in the subject (its NATS permissions allow no
        other) may speak for its own attempts."""
        with contextlib.suppress(ProtocolError, SubjectError):
            _, worker = self.subjects.parse_direct(msg.subject)
            for outcome in decode_each(msg.data, Outcome):
                handle = self._handles.get(outcome.ref.run_id)
                if handle is not None and outcome.worker == worker:
                    handle._answered(outcome)
                    if handle.done:
                        self._handles.pop(outcome.ref.run_id, None)

    @property
    def inline_limit(self) -> int:
        """Bytes of JSON above which a value travels apart, in the payload stream."""
        return self._inline_limit

    async def with_large_args_apart(self, node: Node) -> Node:
        """``node`` with each argument over the inline limit stored in the payload stream
        and named in its ``arg_refs``: a ``kiq`` of a value larger than a NATS message
        could not be sent otherwise, and a large one costs every hop its bytes."""
        values = {str(i): value for i, value in enumerate(node.args)} | node.kwargs
        _, refs = await self._split_inputs(values)
        if not refs:
            return node
        args = tuple(None if str(i) in refs else v for i, v in enumerate(node.args))
        kwargs = {key: None if key in refs else v for key, v in node.kwargs.items()}
        return node.model_copy(update={"args": args, "kwargs": kwargs, "arg_refs": refs})

    async def _split_inputs(
        self, inputs: dict[str, Any]
    ) -> tuple[dict[str, JsonValue], dict[str, PayloadRef]]:
        """Values over the inline limit stored apart; the rest as they are."""
        inline: dict[str, JsonValue] = {}
        refs: dict[str, PayloadRef] = {}
        for key, value in inputs.items():
            data = encode_value(value)
            if len(data) > self._inline_limit:
                refs[key] = await self._payloads.save(data)
            else:
                inline[key] = value
        return inline, refs

    async def outputs(self, view: RunView) -> dict[str, JsonValue]:
        values = dict(view.outputs)
        for key, ref in view.output_refs.items():
            values[key] = await self._payloads.load(ref)
        return values

    async def status(self, run_id: str, *, missing_ok: bool = False) -> RunView | None:
        reply = await self._ctl("status", CtlRequest(run_id=run_id), missing_ok=missing_ok)
        return reply.runs[0] if reply.runs else None

    async def cancel(self, run_id: str) -> None:
        await self._ctl("cancel", CtlRequest(run_id=run_id))

    async def set_max_parallel(self, limit: int | None) -> None:
        """Change the coordinator's global cap on attempts in flight (``None``: no cap)."""
        await self._ctl("limit", CtlRequest(max_parallel=limit))

    async def runs(self, limit: int = 100, before: int | None = None) -> list[RunView]:
        """Up to ``limit`` runs, oldest first: the running ones and the newest finished
        ones, or with ``before`` (a page's ``next_before``) the finished runs older than
        that page. The list is a ``RunPage``: its ``next_before`` pages further back."""
        from shared.wire.runs import RunPage

        reply = await self._ctl("runs", CtlRequest(limit=limit, before=before))
        return RunPage(reply.runs, reply.next_before)

    async def workers(self) -> list[WorkerView]:
        return list((await self._ctl("workers", CtlRequest())).workers)

    async def coordinators(self) -> list[CoordinatorView]:
        """The leader (which answers) and the standby coordinators it has heard of."""
        return list((await self._ctl("workers", CtlRequest())).coordinators)

    async def wait_ready(self, workers: int = 0, within: float = 30.0) -> list[WorkerView]:
        """Until the coordinator answers and knows at least ``workers`` workers.

        Nothing announces readiness, so this asks every 50 ms; it is for start-up
        scripts and tests, not for a hot path.
        """
        async with asyncio.timeout(within):
            while True:
                try:
                    found = await self.workers()
                except FleetError:
                    found = []
                else:
                    if len(found) >= workers:
                        return found
                await asyncio.sleep(0.05)

    async def _ctl(self, verb: str, request: CtlRequest, *, missing_ok: bool = False) -> CtlReply:
        try:
            msg = await self.nc.request(
                self.subjects.ctl(verb), encode(request), timeout=CTL_TIMEOUT
            )
        except Exception as exc:
            raise FleetError(f"no answer from the coordinator to '{verb}': {exc!r}") from exc
        reply = decode_model(msg.data, CtlReply)
        if not reply.ok:
            if missing_ok and reply.error.startswith("no run"):
                return reply
            raise FleetError(reply.error)
        return reply


def _solo(submit: Submit) -> Solo | None:
    """What ends a run of one node with at most one output from its agent's answer; None
    when the coordinator must decide (several nodes or outputs)."""
    nodes = submit.dag.nodes
    if len(nodes) != 1 or len(nodes[0].outputs) > 1:
        return None
    node = nodes[0]
    output = node.outputs[0] if node.outputs else None
    return (submit.name, node.id, node.task, output, time.time())


def _solo_view(run_id: str, solo: Solo | None, outcome: Outcome) -> RunView | None:
    """The end of a one-node run whose node succeeded, as the coordinator builds it; None
    when the coordinator must decide (another node, not a success)."""
    if solo is None or outcome.status != "succeeded":
        return None
    name, node_id, task, output, submitted_at = solo
    if outcome.ref.node_id != node_id:
        return None
    values: dict[str, JsonValue] = {}
    refs: dict[str, PayloadRef] = {}
    if output is not None and outcome.return_ref is not None:
        refs[output] = outcome.return_ref
    elif output is not None:
        values[output] = outcome.return_value
    view = NodeView(
        id=node_id,
        task=task,
        status="succeeded",
        attempt=outcome.ref.attempt,
        worker=outcome.worker,
        started_at=outcome.started_at,
        finished_at=outcome.finished_at,
    )
    return RunView(
        run_id=run_id,
        name=name,
        status="succeeded",
        submitted_at=submitted_at,
        finished_at=outcome.finished_at,
        nodes=(view,),
        outputs=values,
        output_refs=refs,
    )
