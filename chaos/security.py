"""Scenario 5: each role (agent, client) tries to forge, impersonate, read, purge, rewrite
a stored value and redirect, on a nats-server with deploy/nats/accounts.conf and its role users.

An act counts as refused when NATS reports a permission violation for it to the rogue's
connection, or when the coordinator drops it (its log line ``dropped a message its sender
may not send``, or a submission refused with its reason). A subscription NATS lets
through counts as refused only if nothing reaches it while a client asks the coordinator
a question (whose reply is an inbox message).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client

from chaos.fleet import Fleet, Logins
from chaos.report import Figures
from chaos.scenarios import Plan, Scene, flowing, run_scenario
from shared.connection import connect, inbox_prefix
from shared.payloads import PayloadStore
from shared.wire.protocol import AttemptRef, Deregister, Outcome, PayloadRef, Register, encode
from shared.wire.runs import RunUpdate, Submit
from shared.wire.subjects import Subjects
from taskiq_fleet import Dag, FleetError, Node
from tests.processes import ROOT

ACCOUNTS = ROOT / "deploy" / "nats" / "accounts.conf"
USERS = ("coordinator", "client", "dashboard", "agent-a1", "agent-a2", "agent-a3", "sys")
"""Every user of `deploy/nats/accounts.conf`: nats-server refuses to start without each
one's password in its environment."""
WITHIN = 5
DROPPED = "dropped a message its sender may not send"
KEPT = b'"a finished run\'s value"'
PURGES = (
    "STREAM.PURGE.FLEET_PAYLOADS",
    "STREAM.DELETE.FLEET_PAYLOADS",
    "STREAM.MSG.DELETE.FLEET_PAYLOADS",
    "STREAM.PURGE.FLEET_OUTCOMES",
    "STREAM.PURGE.FLEET_SUBMISSIONS",
    "STREAM.DELETE.FLEET_SUBMISSIONS",
)


def passwords() -> dict[str, str]:
    """A fresh password per user, in the environment nats-server reads them from."""
    values = {user: f"pw{secrets.token_hex(12)}" for user in USERS}
    for user, value in values.items():
        os.environ[f"NATS_{user.upper().replace('-', '_')}_PASSWORD"] = value
    return values


@dataclass
class Rogue:
    """One role's connection and what NATS refused it."""

    user: str
    nc: Client
    errors: list[str] = field(default_factory=list)

    async def refused(self, verb: str, subject: str) -> bool:
        want = f'permissions violation for {verb} to "{subject.lower()}"'
        await self.nc.flush(timeout=WITHIN)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WITHIN
        while loop.time() < deadline:  # the error callback is the only signal
            if any(want in e for e in self.errors):
                return True
            await asyncio.sleep(0.02)
        return False

    async def publish(self, subject: str, data: bytes = b"{}") -> bool:
        await self.nc.publish(subject, data)
        return await self.refused("publish", subject)


async def rogue(fleet: Fleet, user: str) -> Rogue:
    found: list[str] = []

    async def on_error(exc: Exception) -> None:
        found.append(str(exc).lower())

    settings = fleet.logins.settings(fleet.url, user)
    nc = await connect(
        settings, name="rogue", error_cb=on_error, inbox_prefix=inbox_prefix(settings)
    )
    return Rogue(user, nc, found)


def dropped(fleet: Fleet) -> int:
    path = fleet.coordinator_log()
    return path.read_text(errors="replace").count(DROPPED) if path.exists() else 0


async def coordinator_drops(fleet: Fleet, before: int) -> bool:
    """Until the coordinator logged one more drop than ``before`` (its log is another
    process's file: asked every 50 ms, for at most 10 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2 * WITHIN
    while loop.time() < deadline:
        if dropped(fleet) > before:
            return True
        await asyncio.sleep(0.05)
    return False


async def reads_nothing(fleet: Fleet, r: Rogue, subject: str) -> bool:
    got: list[str] = []

    async def seen(msg: Any) -> None:
        got.append(msg.subject)

    sub = await r.nc.subscribe(subject, cb=seen)
    if await r.refused("subscription", subject):
        return True
    assert fleet.client is not None
    for _ in range(3):  # replies to a client travel on inboxes
        await fleet.client.workers()
    await r.nc.flush(timeout=WITHIN)
    await sub.unsubscribe()
    return not got


async def running_attempt(scene: Scene) -> AttemptRef:
    """An attempt that runs now, and the worker it runs on is the ``worker`` field."""
    client, record = scene.work.client, scene.fleet.record
    async with asyncio.timeout(60):
        while True:
            run_id = f"long{secrets.token_hex(4)}"
            kwargs = {"seconds": 4.0, "tag": f"{run_id}.n", "record": str(record)}
            dag = Dag(nodes=(Node(id="n", task="chaos_step", kwargs=kwargs),))
            await client.submit(dag, run_id=run_id)
            scene.work.submitted.append(run_id)
            for _ in range(40):
                await asyncio.sleep(0.05)
                try:
                    node = (await client.status(run_id)).node("n")  # type: ignore[union-attr]
                except (FleetError, AttributeError):
                    continue
                if node.status == "running" and node.worker:
                    return AttemptRef(run_id=run_id, node_id="n", attempt=node.attempt)


def forged_outcome(ref: AttemptRef, worker: str) -> bytes:
    now = time.time()
    data = {"ref": ref, "worker": worker, "status": "succeeded", "return_value": 1}
    return encode(Outcome.model_validate({**data, "started_at": now, "finished_at": now}))


def ghost(name: str) -> bytes:
    spec = {"name": name, "cpu": 1000, "ram_mb": 1 << 20}
    data = {"spec": spec, "agent_version": "forged", "pid": 1, "started_at": 1.0}
    return encode(Register.model_validate({**data, "heartbeat_interval": 1.0}))


Act = Callable[[], Awaitable[bool]]


def agent_acts(
    scene: Scene, r: Rogue, me: str, other: str, ref: AttemptRef, kept: PayloadRef
) -> dict[str, Act]:
    s, fleet = Subjects(), scene.fleet

    async def forge_own_subject() -> bool:
        before = dropped(fleet)
        subject = s.outcome(me, ref.run_id, ref.node_id)
        await r.nc.publish(subject, forged_outcome(ref, me))  # the stream stores it
        return await coordinator_drops(fleet, before)

    async def impersonate_in_content() -> bool:
        before = dropped(fleet)
        await r.nc.publish(s.deregister(me), encode(Deregister(worker=other, reason="forged")))
        return await coordinator_drops(fleet, before)

    return {
        "forge: outcome on the other agent's subject": lambda: r.publish(
            s.outcome(other, ref.run_id, ref.node_id), forged_outcome(ref, other)
        ),
        "forge: outcome for the other's attempt on its own subject": forge_own_subject,
        "impersonate: register as the other": lambda: r.publish(s.register(other), ghost(other)),
        "impersonate: heartbeat as the other": lambda: r.publish(s.heartbeat(other)),
        "impersonate: deregister as the other": lambda: r.publish(s.deregister(other)),
        "impersonate: deregister naming the other": impersonate_in_content,
        "read: the other's assignments": lambda: reads_nothing(fleet, r, f"fleet.worker.{other}.>"),
        "read: _INBOX.>": lambda: reads_nothing(fleet, r, "_INBOX.>"),
        "read: the client's inboxes": lambda: reads_nothing(fleet, r, "_INBOX_client.>"),
        **purges(r),
        **rewrites(r, kept),
        "redirect: submit at all": lambda: r.publish(s.submit),
    }


def client_acts(
    scene: Scene, r: Rogue, ref: AttemptRef, runner: str, kept: PayloadRef
) -> dict[str, Act]:
    s, fleet = Subjects(), scene.fleet

    async def redirect() -> bool:
        run_id = f"notify{secrets.token_hex(4)}"
        updates: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_update(msg: Any) -> None:
            updates.put_nowait(msg.data)

        await r.nc.subscribe(s.run_updates(run_id), cb=on_update)
        dag = Dag(nodes=(Node(id="n", task="chaos_step", kwargs={"seconds": 0.01}),))
        submit = Submit(run_id=run_id, dag=dag, notify=s.assign("a1"))
        await r.nc.publish(s.submit, encode(submit), headers={"Nats-Msg-Id": run_id})
        update = RunUpdate.model_validate_json(await asyncio.wait_for(updates.get(), 20))
        return update.status == "failed" and "not a client inbox" in (
            update.run.error if update.run else ""
        )

    return {
        "forge: an agent's outcome": lambda: r.publish(
            s.outcome(runner, ref.run_id, ref.node_id), forged_outcome(ref, runner)
        ),
        "impersonate: heartbeat as an agent": lambda: r.publish(s.heartbeat("a1")),
        "impersonate: register as an agent": lambda: r.publish(s.register("a1"), ghost("a1")),
        "read: an agent's assignments": lambda: reads_nothing(fleet, r, "fleet.worker.a1.>"),
        "read: _INBOX.>": lambda: reads_nothing(fleet, r, "_INBOX.>"),
        **purges(r),
        **rewrites(r, kept),
        "redirect: notify on an agent's subject": redirect,
    }


def purges(r: Rogue) -> dict[str, Act]:
    def act(api: str) -> Act:
        return lambda: r.publish(f"$JS.API.{api}")

    return {f"purge: {api}": act(api) for api in PURGES}


def rewrites(r: Rogue, kept: PayloadRef) -> dict[str, Act]:
    """Replace, roll up or mark deleted a stored value: the client's (``kept``, stored by
    the workload's client) and the rogue's own. Refused when JetStream takes no such write
    (permission or the stream's write-once rule) and the value still reads as stored."""
    s, store = Subjects(), PayloadStore(r.nc, Subjects())

    def act(whose: str, chunk: int, headers: dict[str, str] | None) -> Act:
        async def attempt() -> bool:
            ref = kept if whose == "the client's" else await store.save(KEPT)
            try:
                subject = s.payload_chunk(ref.name, chunk)
                await r.nc.jetstream().publish(subject, b'"forged"', headers=headers, timeout=2)
            except (nats.errors.Error, TimeoutError):
                return await store.read(ref) == KEPT
            return False

        return attempt

    return {
        f"rewrite: {whose} stored value{how}": act(whose, chunk, headers)
        for whose in ("the client's", "its own")
        for how, chunk, headers in (
            ("", 0, None),
            (" (rollup)", 0, {"Nats-Rollup": "sub"}),
            (" (rollup of the stream)", 1, {"Nats-Rollup": "all"}),
        )
    }


async def attempt_all(scene: Scene) -> None:
    fleet, figures = scene.fleet, scene.figures
    ref = await running_attempt(scene)
    kept = await PayloadStore(scene.work.client.nc, Subjects()).save(KEPT)
    status = await scene.work.client.status(ref.run_id)
    runner = (status.node("n").worker if status is not None else None) or "a1"
    me = "a2" if runner == "a1" else "a1"
    roles: list[tuple[str, Callable[[Rogue], dict[str, Act]]]] = [
        (f"agent-{me}", lambda r: agent_acts(scene, r, me, runner, ref, kept)),
        ("client", lambda r: client_acts(scene, r, ref, runner, kept)),
    ]
    for user, acts in roles:
        r = await rogue(fleet, user)
        try:
            for name, act in acts(r).items():
                figures.tried += 1
                try:
                    ok = await act()
                except Exception as exc:  # an act that broke is not a refusal
                    ok, name = False, f"{name} ({exc!r})"
                figures.refused += ok
                if not ok:
                    figures.problems.append(f"{user} was not refused: {name}")
        finally:
            await r.nc.close()


async def security(plan: Plan) -> Figures:
    logins = Logins(passwords())
    fleet = Fleet(2, server_args=("-c", str(ACCOUNTS)), logins=logins)

    async def body(scene: Scene) -> None:
        await flowing(scene, attempt_all)
        scene.figures.rounds = 1

    return await run_scenario("security", plan, body, fleet)
