"""Run state in JetStream KV: what a restarted coordinator resumes from.

Key spaces in the runs bucket: ``live.<run>`` holds the submission and the
latest view of a running run; ``done.<run>`` holds the final view;
``queued.<id>`` holds the submissions of many runs that were still waiting as
submitted when it was written (one record for a queue's worth of runs, not a
write and a purge per run), until the last of them has a record of its own.
A restart lists only ``live.*`` and ``queued.*``, so resuming costs what is
running, not the history.
A live record that cannot be read (written by a bug, or by hand) must not stop
every later start: it is moved to ``aside.<run>`` as it was, and the run ends
failed with the reason, so ``fleet runs`` and ``fleet status`` show it.
Writes are behind the scheduler, never in front of it: a crash loses at most
the last writes, and the agents' heartbeats and the unacknowledged outcomes
in JetStream fill that gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue
from pydantic import ValidationError

from coordinator import atomic
from coordinator.atomic import allow_atomic
from coordinator.run_records import (
    QueuedRun,
    StoredRun,
    Unreadable,
    live_record,
    queued_record,
    read_live,
    read_queued,
)
from coordinator.turns import WRITE_EVERY, WRITE_REST, Turns
from shared.jetstream import Limits
from shared.wire.runs import RunView, Submit
from shared.wire.subjects import Subjects, token

HISTORY_TTL = 7 * 24 * 3600.0
SCAN_BATCH = 1000
TRIM_EVERY = 1000
TRIM_ROUNDS = 4
"""Finished runs written between two checks of the count and byte limits."""
DONE = "done.*"
QUEUED = "queued.*"
RESUME_CHUNK = 1000
"""Runs of queued records whose final records a restart looks for at once."""
LOOKUP_MOST = 20_000
"""Past this many runs in queued records, a restart lists the final records written since
the oldest of them instead of asking for each run's."""
SCAN_TIMEOUT = 5.0
TAIL_WINDOW = 256
"""Stream sequences read first when listing the newest finished runs (doubling after)."""
SCAN_IDLE = 60.0
"""An abandoned scan's consumer (its coordinator died mid-read) goes after this long."""
MARKER = "Nats-Marker-Reason"
log = structlog.get_logger(__name__)


def _live(run_id: str) -> str:
    return f"live.{token(run_id)}"


def _done(run_id: str) -> str:
    return f"done.{token(run_id)}"


def _queued(record_id: str) -> str:
    return f"queued.{token(record_id)}"


@dataclass(frozen=True, slots=True)
class Queued:
    """What a restart resumes from the queued records: the runs (those with no record of
    their own), and each record's runs still to end before it may go."""

    runs: list[StoredRun]
    records: dict[str, list[str]]


def _aside(run_id: str) -> str:
    return f"aside.{token(run_id)}"


class RunStore:
    def __init__(
        self, js: JetStreamContext, kv: KeyValue, bucket: str, limits: Limits | None = None
    ) -> None:
        self._js = js
        self._kv = kv
        self._stream = f"KV_{bucket}"
        self._prefix = f"$KV.{bucket}."
        self._limits = limits or Limits()
        self._finals = 0
        """Final records written since the last ``trim``."""
        self._atomic: bool | None = None
        """Whether the bucket takes atomic batches (asked at a write until answered)."""
        self.turns = Turns(WRITE_EVERY, rest=WRITE_REST)
        """The writer's turns, paced by the checkpoint that calls it (``Turns.paced``)."""

    @classmethod
    async def open(
        cls, js: JetStreamContext, subjects: Subjects, limits: Limits | None = None
    ) -> RunStore:
        """The runs bucket, created if missing. With ``limits`` (the coordinator's
        settings) its age limit is set to them, and finished runs past the count and byte
        limits are trimmed now and every ``TRIM_EVERY`` finished runs."""
        ttl = (limits or Limits()).max_age or None
        try:
            kv = await js.key_value(subjects.runs_bucket)
        except BucketNotFoundError:
            kv = await js.create_key_value(
                api.KeyValueConfig(bucket=subjects.runs_bucket, ttl=ttl, history=1)
            )
        store = cls(js, kv, subjects.runs_bucket, limits)
        if limits is not None:
            await store._apply_age(ttl or 0.0)
            await store.trim()
        return store

    async def _apply_age(self, max_age: float) -> None:
        """The bucket's age limit only: a KV bucket refuses writes past its count or byte
        limits, so those are kept by ``trim``, which never touches a live run."""
        config = (await self._js.stream_info(self._stream)).config
        if abs((config.max_age or 0.0) - max_age) > 1e-6:
            await self._js.update_stream(dataclasses.replace(config, max_age=max_age))

    async def trim(self) -> int:
        """Drop the oldest finished runs past the count and byte limits (the byte limit
        counts the whole bucket); returns how many were dropped."""
        self._finals = 0
        dropped = 0
        for _ in range(TRIM_ROUNDS):  # bytes per record vary: a round may fall short
            excess = await self._excess()
            if excess <= 0:
                break
            last = await self._nth_oldest(DONE, excess)
            oldest = await self._oldest_queued()
            if oldest is None or last < oldest:
                await self._purge_done_before(last + 1)
                dropped += excess
                continue
            # A final record after the oldest queued record may be all that says one of its
            # runs ended (``queued``): those stay until that record goes.
            await self._purge_done_before(oldest)
            dropped += excess - max(0, await self._excess())
            log.warning(
                "finished runs kept past the retention limits while a queued record needs them"
            )
            break
        if dropped:
            log.info("trimmed finished runs past the retention limits", runs=dropped)
        return dropped

    async def _purge_done_before(self, seq: int) -> None:
        if seq > 1:
            await self._js.purge_stream(self._stream, seq=seq, subject=self._prefix + DONE)

    async def _excess(self) -> int:
        """How many of the oldest finished runs are past the count or byte limit."""
        count_limit, byte_limit = self._limits.max_msgs, self._limits.max_bytes
        if count_limit < 0 and byte_limit < 0:
            return 0
        state = (await self._js.stream_info(self._stream)).state
        async with self._consumer(DONE, 0, headers_only=True) as (_, done):
            pass
        excess = done - count_limit if count_limit >= 0 else 0
        if 0 <= byte_limit < state.bytes and done:
            excess = max(excess, math.ceil(done * (state.bytes - byte_limit) / state.bytes))
        return min(excess, done)

    async def _nth_oldest(self, pattern: str, n: int) -> int:
        """The sequence of the ``n``-th oldest value of keys matching ``pattern``."""
        seq = 0
        async with self._consumer(pattern, 1, headers_only=True) as (sub, pending):
            left = min(n, pending)
            while left > 0:
                msgs = await sub.fetch(min(left, SCAN_BATCH), timeout=SCAN_TIMEOUT)
                left -= len(msgs)
                seq = msgs[-1].metadata.sequence.stream
        return seq

    async def save(self, submit: Submit | bytes, view: RunView, had_live: bool = True) -> None:
        """The final record of a finished run (removing its live one, if it had one), or
        the live record of a running one (``submit`` may be its JSON already)."""
        if view.done:
            await self._save_final(view, had_live)
        else:
            await self._kv.put(_live(view.run_id), live_record(submit, view))

    async def _save_final(self, view: RunView, had_live: bool) -> None:
        """The final record, then the live one purged (no delete marker is left behind:
        a restart reads what is live, and the byte limit is spent on finished runs)."""
        await self._kv.put(_done(view.run_id), view.model_dump_json().encode())
        if had_live:
            await self._drop_live(view.run_id)

    async def save_queued(self, record_id: str, runs: Sequence[tuple[float, bytes]]) -> None:
        await self._kv.put(_queued(record_id), queued_record(runs))

    async def drop_queued(self, record_id: str) -> None:
        """Its runs all have records of their own now (or ended)."""
        await self._js.purge_stream(self._stream, subject=self._prefix + _queued(record_id))

    async def queued(self, recorded: set[str]) -> Queued:
        """The runs of the queued records that have no record of their own (``recorded``:
        those with a live one) and did not end (a run's final record is written before its
        queued record goes, so a record may name runs that ended)."""
        listed: dict[str, QueuedRun] = {}
        records: dict[str, list[str]] = {}
        items = await self._read(QUEUED, 0)
        for key, raw, _ in items:
            read = read_queued(raw)
            if read is None:  # left where it is, for a person to look at
                log.error("skipped an unreadable queued record", key=key)
                continue
            for problem in read.problems:
                log.error("skipped an unreadable queued run", key=key, error=problem)
            for bad in read.unreadable:
                await self._set_aside_or_skip(bad)
            runs = records[key.removeprefix("queued.")] = []
            for run in read.runs:
                run_id = run.submit.run_id
                if run_id not in recorded:
                    listed[run_id] = run
                    runs.append(run_id)
        since = min((seq for _, _, seq in items), default=0)
        ended = await self._ended_among(list(listed), since)
        found = [
            StoredRun(submit=run.submit, view=RunView(run_id=run_id, submitted_at=run.submitted_at))
            for run_id, run in listed.items()
            if run_id not in ended
        ]
        return Queued(found, {k: [r for r in v if r not in ended] for k, v in records.items()})

    async def _ended_among(self, run_ids: list[str], since: int) -> set[str]:
        """Which of these runs have a final record: asked one by one when they are few;
        else the keys of the final records written since sequence ``since`` (the oldest
        queued record's: a run's final record follows the record that named it) are read,
        without their values, a batch at a time."""
        if len(run_ids) <= LOOKUP_MOST:
            ended: set[str] = set()
            for start in range(0, len(run_ids), RESUME_CHUNK):
                ended.update(await self.finished(run_ids[start : start + RESUME_CHUNK]))
            return ended
        wanted, found = set(run_ids), set()
        async with self._consumer(DONE, since, headers_only=True) as (sub, pending):
            while pending > 0:
                for msg in await sub.fetch(min(pending, SCAN_BATCH), timeout=SCAN_TIMEOUT):
                    pending = msg.metadata.num_pending
                    run_id = msg.subject.removeprefix(self._prefix + "done.")
                    if run_id in wanted and (msg.headers or {}).get(KV_OP) is None:
                        found.add(run_id)
        return found

    async def _oldest_queued(self) -> int | None:
        """The stream sequence of the oldest queued record, if any (read without values:
        a deep queue's records hold hundreds of megabytes)."""
        return await self._nth_oldest(QUEUED, 1) or None

    async def save_many(
        self, items: Sequence[tuple[Submit | bytes, RunView, bool]]
    ) -> dict[str, Exception]:
        """Save each; returns the runs whose write failed, with why. One record the server
        refuses (e.g. over its payload limit) must not hold back every other run's. Final
        records go in atomic batches where the server takes them (``atomic.py``); a batch
        refused is written again one record at a time."""
        together = await self._finals_together([v for _, v, _ in items if v.done])
        writes = {}  # a run whose final record went in a batch and had no live one: nothing
        for index, (submit, view, live) in enumerate(items):
            if view.run_id not in together:
                writes[index] = self.save(submit, view, live)
            elif live:
                writes[index] = self._drop_live(view.run_id)
        done = await asyncio.gather(*writes.values(), return_exceptions=True)
        results: list[BaseException | None] = [None] * len(items)
        for index, result in zip(writes, done, strict=True):
            results[index] = result
        failed: dict[str, Exception] = {}
        for (_, view, _), result in zip(items, results, strict=True):
            if isinstance(result, Exception):
                failed[view.run_id] = result
            elif isinstance(result, BaseException):
                raise result
            elif view.done:
                self._finals += 1
        if self._finals >= TRIM_EVERY:
            await self._trim_or_log()
        return failed

    async def _finals_together(self, views: list[RunView]) -> set[str]:
        """The runs whose final records were stored in atomic batches."""
        if self._atomic is None:
            self._atomic = await allow_atomic(self._js, self._stream)
        stored: set[str] = set()
        if not self._atomic or len(views) < 2:
            return stored
        for start in range(0, len(views), atomic.MOST):
            chunk = views[start : start + atomic.MOST]
            messages = []
            for v in chunk:
                messages.append((self._prefix + _done(v.run_id), v.model_dump_json().encode()))
                await self.turns.take()
            try:
                await atomic.publish_atomic(self._js, messages)
            except Exception as exc:  # refused, or one message too large to send at all
                log.info("final records not stored together; one by one", error=str(exc)[:200])
                continue
            stored.update(v.run_id for v in chunk)
        return stored

    async def _drop_live(self, run_id: str) -> None:
        await self._js.purge_stream(self._stream, subject=self._prefix + _live(run_id))

    async def _trim_or_log(self) -> None:
        """A failed trim costs nothing but the space: the next one catches up."""
        try:
            await self.trim()
        except Exception as exc:
            log.warning("could not trim finished runs; will retry", error=str(exc)[:200])

    async def live(self) -> list[StoredRun]:
        """Every readable live record; unreadable ones are set aside (``set_aside``)."""
        found: list[StoredRun] = []
        for key, raw in await self._scan_items("live.*"):
            record = read_live(key, raw)
            if isinstance(record, Unreadable):
                await self._set_aside_or_skip(record)
            else:
                found.append(record)
        return found

    async def _set_aside_or_skip(self, record: Unreadable) -> None:
        try:
            await self.set_aside(record.run_id, record.raw, record.error)
        except ValueError as exc:  # a key no run id could have: leave it, skip it
            log.error("skipped an unreadable run record", key=record.run_id, error=str(exc))

    async def set_aside(self, run_id: str, raw: bytes, error: str) -> None:
        """Keep a record the coordinator cannot resume under ``aside.<run>`` and end its
        run failed with the reason, instead of failing every start on it."""
        log.error("set aside an unreadable run record", run=run_id, error=error)
        view = RunView(
            run_id=run_id,
            status="failed",
            finished_at=time.time(),
            error=f"the coordinator could not read this run's stored record: {error}",
        )
        await self._kv.put(_aside(run_id), raw)
        await self._save_final(view, had_live=True)

    async def view(self, run_id: str) -> RunView | None:
        done = await self._get(_done(run_id))
        if done is not None:
            return RunView.model_validate_json(done)
        live = await self._get(_live(run_id))
        return None if live is None else StoredRun.model_validate_json(live).view

    async def finished(self, run_ids: list[str]) -> dict[str, RunView]:
        """The final views of those runs that already finished (and are still retained):
        one KV get each, concurrently. A record that does not decode still says the run
        ended, so it comes back as a failed view rather than letting the id run again."""
        raws = await asyncio.gather(*(self._get(_done(r)) for r in run_ids))
        found: dict[str, RunView] = {}
        for run_id, raw in zip(run_ids, raws, strict=True):
            if raw is not None:
                found[run_id] = _final_view(run_id, raw)
        return found

    async def recent(self, limit: int) -> list[RunView]:
        """The last ``limit`` finished runs; a record that does not decode is skipped."""
        return (await self.recent_page(limit))[0]

    async def recent_page(
        self, limit: int, before: int | None = None
    ) -> tuple[list[RunView], int | None]:
        """The last ``limit`` finished runs stored before the cursor ``before`` (a stream
        sequence; ``None``: the newest), and the cursor for the page older than these
        (``None`` when there is none). Final records are written in the order runs end,
        so the newest are read back from the stream's tail in growing windows: the cost
        is the page, not the history."""
        state = (await self._js.stream_info(self._stream)).state
        if not state.first_seq or not state.messages:
            return [], None
        top = state.last_seq + 1 if before is None else min(before, state.last_seq + 1)
        found, lo = await self._tail("done.*", limit, state.first_seq, top)
        page = found[-limit:] if limit else []
        more = lo > state.first_seq or len(found) > len(page)
        cursor = (page[0][2] if page else top) if more else None
        return [v for v in map(_done_view, page) if v is not None], cursor

    async def _tail(
        self, pattern: str, limit: int, first: int, top: int
    ) -> tuple[list[tuple[str, bytes, int]], int]:
        """At least ``limit`` values stored below sequence ``top`` (fewer if the stream
        has no more), oldest first, and the lowest sequence read."""
        found: list[tuple[str, bytes, int]] = []
        lo = hi = top
        window = max(TAIL_WINDOW, 4 * limit)
        while limit and len(found) < limit and lo > first:
            lo = max(first, hi - window)
            found = await self._read(pattern, lo, hi) + found
            hi, window = lo, window * 2
        return found, lo

    async def _scan_items(self, pattern: str) -> list[tuple[str, bytes]]:
        """Keys and current values matching a subject pattern, complete by construction: a
        pull consumer is made (nothing delivered yet, so its pending count is exact) and
        read until a message says nothing is pending after it. (nats-py's watcher can
        signal "no more" before the last value when deletes are in the stream.)"""
        return [(key, raw) for key, raw, _ in await self._read(pattern, 0)]

    async def _read(
        self, pattern: str, start: int, stop: int | None = None
    ) -> list[tuple[str, bytes, int]]:
        """(key, value, sequence) of the current values of keys matching ``pattern`` stored
        at sequence ``start`` or later (``0``: all), and before ``stop`` if given; deleted
        keys are left out."""
        async with self._consumer(pattern, start) as (sub, pending):
            batch = SCAN_BATCH if stop is None else max(1, min(SCAN_BATCH, stop - start))
            return await _drain(sub, pending, self._prefix, stop, batch)

    @contextlib.asynccontextmanager
    async def _consumer(
        self, pattern: str, start: int, *, headers_only: bool = False
    ) -> AsyncIterator[tuple[JetStreamContext.PullSubscription, int]]:
        """A pull consumer from sequence ``start`` (``0``: the last value of each key) and
        its exact pending count: nothing is delivered before it is asked for."""
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE
            if start
            else api.DeliverPolicy.LAST_PER_SUBJECT,
            opt_start_seq=start or None,
            ack_policy=api.AckPolicy.NONE,
            inactive_threshold=SCAN_IDLE,
            mem_storage=True,
            headers_only=headers_only or None,
        )
        sub = await self._js.pull_subscribe(
            self._prefix + pattern, stream=self._stream, config=config
        )
        try:
            yield sub, (await sub.consumer_info()).num_pending or 0
        finally:
            await self._drop(sub)

    async def _drop(self, sub: JetStreamContext.PullSubscription) -> None:
        with contextlib.suppress(Exception):
            name = (await sub.consumer_info()).name
            await sub.unsubscribe()
            await self._js.delete_consumer(self._stream, name)

    async def _get(self, key: str) -> bytes | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        return entry.value


def _done_view(item: tuple[str, bytes, int]) -> RunView | None:
    try:
        return RunView.model_validate_json(item[1])
    except (ValidationError, ValueError, RecursionError) as exc:
        log.warning("skipped an unreadable finished run", key=item[0], error=str(exc)[:200])
        return None


def _final_view(run_id: str, raw: bytes) -> RunView:
    try:
        return RunView.model_validate_json(raw)
    except (ValidationError, ValueError, RecursionError) as exc:
        error = f"this run already ended; its stored record is unreadable: {exc}"[:500]
        return RunView(run_id=run_id, status="failed", error=error)


def _is_value(msg: Msg) -> bool:
    """A stored value, not a delete or purge marker (nor a server's expiry marker)."""
    headers = msg.headers or {}
    if headers.get(KV_OP) in (KV_DEL, KV_PURGE) or MARKER in headers:
        return False
    return bool(msg.data)


async def _drain(
    sub: JetStreamContext.PullSubscription,
    pending: int,
    prefix: str,
    stop: int | None,
    batch: int,
) -> list[tuple[str, bytes, int]]:
    """Fetch until no message is pending after the last one (or one at ``stop``)."""
    found: list[tuple[str, bytes, int]] = []
    while pending > 0:
        for msg in await sub.fetch(min(pending, batch), timeout=SCAN_TIMEOUT):
            meta = msg.metadata
            pending = meta.num_pending
            if stop is not None and meta.sequence.stream >= stop:
                return found
            if _is_value(msg):
                found.append((msg.subject.removeprefix(prefix), msg.data, meta.sequence.stream))
    return found
