"""The leader lease against a real nats-server: one leader, a standby that takes over when
it stops renewing, and a paused leader that comes back to find itself deposed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError

from coordinator.leadership import LeaseTiming, Role
from coordinator.lease import (
    FORGET_AFTER,
    PRESENCE,
    LeaseKeeper,
    Presence,
    coordinators,
    open_bucket,
)
from shared.wire.subjects import Subjects

TIMING = LeaseTiming(ttl=0.6, margin=0.2)
WITHIN = 10.0


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


async def keeper(nc: Client, me: str) -> LeaseKeeper:
    return LeaseKeeper(await open_bucket(nc.jetstream(), Subjects()), me, f"host-{me}", TIMING)


async def test_one_leads_and_a_standby_takes_over_when_it_stops(nc: Client) -> None:
    a, b = await keeper(nc, "a"), await keeper(nc, "b")
    run_a = asyncio.create_task(a.run())
    await asyncio.wait_for(a.leading.wait(), WITHIN)
    run_b = asyncio.create_task(b.run())
    try:
        await asyncio.sleep(3 * TIMING.ttl)  # b must not take a lease that is renewed
        assert (a.lease.role, b.lease.role) == (Role.LEADER, Role.STANDBY)
        assert a.valid()
        assert not b.valid()
        present = await coordinators(await open_bucket(nc.jetstream(), Subjects()), time.time())
        assert [(p.name, p.role) for p in present] == [("host-a", "leader"), ("host-b", "standby")]

        run_a.cancel()  # killed: no release
        stopped = time.monotonic()
        await asyncio.wait_for(b.leading.wait(), WITHIN)
        assert time.monotonic() - stopped >= TIMING.ttl * (1 - TIMING.margin)
        assert b.term == a.term + 1
    finally:
        run_a.cancel()
        run_b.cancel()


async def test_a_paused_leader_stops_acting_and_steps_down_when_it_resumes(nc: Client) -> None:
    a, b = await keeper(nc, "a"), await keeper(nc, "b")
    run_a = asyncio.create_task(a.run())
    await asyncio.wait_for(a.leading.wait(), WITHIN)
    run_b = asyncio.create_task(b.run())
    try:
        run_a.cancel()  # paused: it runs nothing until resumed
        await asyncio.wait_for(b.leading.wait(), WITHIN)
        assert not a.valid(), "a paused leader must not act past its lease"
        assert a.lease.role is Role.LEADER  # it has not noticed yet

        run_a = asyncio.create_task(a.run())  # resumed
        await asyncio.wait_for(a.deposed.wait(), WITHIN)
        assert a.lease.role is Role.STANDBY
        assert not a.leading.is_set()
        assert b.lease.role is Role.LEADER
        assert b.valid()
    finally:
        run_a.cancel()
        run_b.cancel()


async def test_a_released_lease_is_taken_at_once(nc: Client) -> None:
    a, b = await keeper(nc, "a"), await keeper(nc, "b")
    run_a = asyncio.create_task(a.run())
    await asyncio.wait_for(a.leading.wait(), WITHIN)
    run_b = asyncio.create_task(b.run())
    try:
        await asyncio.sleep(TIMING.look_every * 3)  # b has read the record
        run_a.cancel()
        released = time.monotonic()
        await a.release()
        await asyncio.wait_for(b.leading.wait(), WITHIN)
        assert time.monotonic() - released < TIMING.ttl * (1 - TIMING.margin)
    finally:
        run_a.cancel()
        run_b.cancel()


async def test_two_started_together_never_both_lead(nc: Client) -> None:
    keepers = [await keeper(nc, name) for name in "abcd"]
    runs = [asyncio.create_task(k.run()) for k in keepers]
    try:
        waits = [asyncio.create_task(k.leading.wait()) for k in keepers]
        await asyncio.wait(waits, timeout=WITHIN, return_when=asyncio.FIRST_COMPLETED)
        for _ in range(20):
            assert sum(k.valid() for k in keepers) <= 1
            await asyncio.sleep(TIMING.renew_every)
        assert sum(k.lease.role is Role.LEADER for k in keepers) == 1
    finally:
        for r in runs:
            r.cancel()


async def test_presence_of_coordinators_long_silent_is_forgotten(nc: Client) -> None:
    """A coordinator killed -9 never deletes its presence key; the leader does, later."""
    kv = await open_bucket(nc.jetstream(), Subjects())
    now = time.time()
    for name, at in (("live", now), ("killed", now - FORGET_AFTER - 1), ("quiet", now - 30)):
        seen = Presence(id=name, name=f"host:{name}", role="standby", at=at)
        await kv.put(f"{PRESENCE}.{name}", seen.model_dump_json().encode())
    await kv.put(f"{PRESENCE}.junk", b"not json")
    assert [p.id for p in await coordinators(kv, now)] == ["live"]
    left = []
    for key in ("live", "killed", "quiet", "junk"):
        with contextlib.suppress(KeyNotFoundError):
            await kv.get(f"{PRESENCE}.{key}")
            left.append(key)
    assert left == ["live", "quiet"]


async def test_a_slow_read_of_the_presence_keys_does_not_hold_back_a_renewal(
    nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading the other coordinators' keys (a KV watch) took seconds with NATS busy writing
    a deep queue, and the renewal waited behind it: the lease lapsed every few seconds."""
    import coordinator.lease as lease_module

    reading, renewed_meanwhile = asyncio.Event(), asyncio.Event()

    async def slow_members(kv: object, now: float, within: float = 10.0) -> list[Presence]:
        reading.set()
        await renewed_meanwhile.wait()
        return []

    monkeypatch.setattr(lease_module, "coordinators", slow_members)
    monkeypatch.setattr(lease_module, "MEMBERS_EVERY", 0.0)
    a = await keeper(nc, "a")
    running = asyncio.create_task(a.run())
    try:
        await asyncio.wait_for(reading.wait(), WITHIN)
        for _ in range(3):  # renewals go on while the read has not returned
            a.renewed.clear()
            await asyncio.wait_for(a.renewed.wait(), WITHIN)
        assert a.valid()
        renewed_meanwhile.set()
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
