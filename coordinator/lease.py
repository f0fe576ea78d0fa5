"""The leader lease in JetStream KV: read, claimed, renewed and released here.

``coordinator/leadership.py`` decides; this module only reads and writes the record, with
the revision the decision was made on, and tells the service when this coordinator starts
or stops leading. Beside the lease, each coordinator keeps a presence key, so the status
reply can name the leader and the standbys.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog
from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.errors import Error as JetStreamError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, ValidationError

from coordinator.leadership import Due, LeaderRecord, Lease, LeaseTiming, Role
from shared.wire.subjects import Subjects

log = structlog.get_logger(__name__)

LEASE_KEY = "leader"
PRESENCE = "coordinator"
"""Presence keys: ``coordinator.<id>``."""
PRESENT_EVERY = 1.0
"""How often each coordinator writes its presence key."""
MEMBERS_EVERY = 5.0
"""How often the leader reads the presence keys (a KV watch each time)."""
FORGET_AFTER = 60.0
"""A presence key not written for this long (its process was killed) is deleted."""


class Presence(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    name: str
    role: str
    at: float
    """Wall-clock seconds of the last write, for people; standbys are judged by it."""


async def open_bucket(js: JetStreamContext, subjects: Subjects) -> KeyValue:
    try:
        return await js.key_value(subjects.leader_bucket)
    except BucketNotFoundError:
        with contextlib.suppress(JetStreamError):
            return await js.create_key_value(
                api.KeyValueConfig(bucket=subjects.leader_bucket, history=1)
            )
        return await js.key_value(subjects.leader_bucket)


class LeaseKeeper:
    """Runs the lease for one coordinator: ``leading`` is set while it leads."""

    def __init__(
        self,
        kv: KeyValue,
        me: str,
        name: str,
        timing: LeaseTiming | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.lease = Lease(me, timing or LeaseTiming())
        self.name = name
        self.leading = asyncio.Event()
        self.deposed = asyncio.Event()
        self.renewed = asyncio.Event()
        """Set at every claim or renewal written (a leader waiting to act again)."""
        self._kv = kv
        self._clock = clock
        self._wall = wall
        self._members_at = 0.0
        self.members: list[Presence] = []
        """Every coordinator heard from lately, as the leader last read them."""

    @property
    def term(self) -> int:
        return self.lease.term

    def valid(self) -> bool:
        return self.lease.valid(self._clock())

    async def run(self) -> None:
        """Keep the lease, and beside it (a task of its own) the presence key: a presence
        write or a read of the others' keys that is slow (NATS busy with a deep queue's
        writes) held the next renewal back, and the lease lapsed although NATS would have
        renewed it in time."""
        presence = asyncio.create_task(self._keep_present())
        try:
            await self._keep_lease()
        finally:
            presence.cancel()

    async def _keep_lease(self) -> None:
        timing = self.lease.timing
        while True:
            try:
                await self._step()
            except (JetStreamError, TimeoutError) as exc:  # NATS away: validity runs out
                log.warning("lease record unreachable", error=str(exc))
                self.lease.unreachable()
            pause = timing.renew_every if self.lease.role is Role.LEADER else timing.look_every
            await asyncio.sleep(pause)

    async def _keep_present(self) -> None:
        while True:
            try:
                await self._present()
            except Exception as exc:  # NATS away or closing: the lease task decides
                log.warning("presence key unreachable", error=str(exc))
            await asyncio.sleep(PRESENT_EVERY)

    async def _step(self) -> None:
        lease, now = self.lease, self._clock()
        due = lease.due(now)
        if due is Due.WAIT:
            if lease.role is Role.STANDBY:
                await self._read()
            return
        if due is Due.CLAIM:
            record = lease.claim(self.name, floor=int(self._wall()))
        else:
            record = lease.renewal()
        data = record.model_dump_json().encode()
        try:
            if lease.revision is None:
                revision = await self._kv.create(LEASE_KEY, data)
            else:
                revision = await self._kv.update(LEASE_KEY, data, last=lease.revision)
        except (KeyWrongLastSequenceError, JetStreamError) as exc:
            if isinstance(exc, KeyWrongLastSequenceError) or "wrong last sequence" in str(exc):
                await self._read()  # someone else wrote first: see who
                self._settle()
                return
            raise
        was = lease.role
        lease.won(record, revision, now)
        self.renewed.set()
        if was is Role.STANDBY:
            log.info("leading the fleet", term=lease.term)
            self.deposed.clear()
            self.leading.set()

    async def _read(self) -> None:
        try:
            entry = await self._kv.get(LEASE_KEY)
        except KeyNotFoundError:
            self.lease.observed(None, None, self._clock())
            return
        record: LeaderRecord | None = None
        if entry.value:
            with contextlib.suppress(ValidationError):
                record = LeaderRecord.model_validate_json(entry.value)
        self.lease.observed(record, entry.revision, self._clock())
        self._settle()

    def _settle(self) -> None:
        if self.lease.role is Role.STANDBY and self.leading.is_set():
            held = self.lease.record
            log.warning("no longer leading", term=held.term if held else None)
            self.leading.clear()
            self.deposed.set()

    async def _present(self) -> None:
        wall = self._wall()
        me = Presence(id=self.lease.me, name=self.name, role=self.lease.role.value, at=wall)
        with contextlib.suppress(JetStreamError, TimeoutError):
            await self._kv.put(f"{PRESENCE}.{self.lease.me}", me.model_dump_json().encode())
        if self.lease.role is Role.LEADER and wall - self._members_at >= MEMBERS_EVERY:
            self._members_at = wall
            self.members = await coordinators(self._kv, wall)

    async def release(self) -> None:
        """On a clean stop: a standby takes over at once instead of after ``ttl``."""
        lease = self.lease
        with contextlib.suppress(JetStreamError, TimeoutError):
            if lease.role is Role.LEADER and lease.revision is not None:
                data = lease.release().model_dump_json().encode()
                await self._kv.update(LEASE_KEY, data, last=lease.revision)
            await self._kv.delete(f"{PRESENCE}.{lease.me}")
        lease.lost()
        self.leading.clear()


async def coordinators(kv: KeyValue, now: float, within: float = 10.0) -> list[Presence]:
    """Every coordinator heard from in the last ``within`` seconds (wall clock); the keys
    of those silent for ``FORGET_AFTER`` are deleted, so killed ones do not pile up."""
    found: list[Presence] = []
    gone: list[str] = []
    with contextlib.suppress(JetStreamError, TimeoutError):
        watcher = await kv.watch(f"{PRESENCE}.*", ignore_deletes=True)
        try:
            while (entry := await watcher.updates(timeout=2.0)) is not None:  # type: ignore[no-untyped-call]
                try:
                    seen = Presence.model_validate_json(entry.value or b"")
                except ValidationError:
                    gone.append(entry.key)
                    continue
                if now - seen.at <= within:
                    found.append(seen)
                elif now - seen.at > FORGET_AFTER:
                    gone.append(entry.key)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        for key in gone:
            await kv.delete(key)
    return sorted(found, key=lambda p: (p.role != "leader", p.name))
