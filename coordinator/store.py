"""Run state in JetStream KV: what a restarted coordinator resumes from.

Key spaces in the runs bucket: ``live.<run>`` holds the submission and the
latest view of a running run; ``done.<run>`` holds the final view. A restart
lists only ``live.*``, so resuming costs what is running, not the history.
A live record that cannot be read (written by a bug, or by hand) must not stop
every later start: it is moved to ``aside.<run>`` as it was, and the run ends
failed with the reason, so ``fleet runs`` and ``fleet status`` show it.
Writes are behind the scheduler, never in front of it: a crash loses at most
the last writes, and the agents' heartbeats and the unacknowledged outcomes
in JetStream fill that gap.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog
from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from shared.wire.protocol import Part
from shared.wire.runs import RunView, Submit
from shared.wire.subjects import Subjects, token

HISTORY_TTL = 7 * 24 * 3600.0
log = structlog.get_logger(__name__)


class StoredRun(Part):
    submit: Submit
    view: RunView


def _live(run_id: str) -> str:
    return f"live.{token(run_id)}"


def _done(run_id: str) -> str:
    return f"done.{token(run_id)}"


def _aside(run_id: str) -> str:
    return f"aside.{token(run_id)}"


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A live record that did not decode: its key's run id, the raw bytes and why."""

    run_id: str
    raw: bytes
    error: str


def read_live(key: str, raw: bytes) -> StoredRun | Unreadable:
    """One live record, or why it cannot be resumed (never an exception)."""
    try:
        return StoredRun.model_validate_json(raw)
    except (ValidationError, ValueError, RecursionError) as exc:
        return Unreadable(key.removeprefix("live."), raw, f"{type(exc).__name__}: {exc}"[:500])


class RunStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, subjects: Subjects) -> RunStore:
        try:
            kv = await js.key_value(subjects.runs_bucket)
        except BucketNotFoundError:
            kv = await js.create_key_value(
                api.KeyValueConfig(bucket=subjects.runs_bucket, ttl=HISTORY_TTL, history=1)
            )
        return cls(kv)

    async def save(self, submit: Submit, view: RunView, had_live: bool = True) -> None:
        """The final record of a finished run (removing its live one, if it had one), or
        the live record of a running one."""
        if view.done:
            await self._save_final(view, had_live)
        else:
            stored = StoredRun(submit=submit, view=view)
            await self._kv.put(_live(view.run_id), stored.model_dump_json().encode())

    async def _save_final(self, view: RunView, had_live: bool) -> None:
        await self._kv.put(_done(view.run_id), view.model_dump_json().encode())
        if had_live:
            await self._kv.delete(_live(view.run_id))

    async def save_many(self, items: list[tuple[Submit, RunView, bool]]) -> dict[str, Exception]:
        """Save each; returns the runs whose write failed, with why. One record the server
        refuses (e.g. over its payload limit) must not hold back every other run's."""
        results = await asyncio.gather(
            *(self.save(s, v, live) for s, v, live in items), return_exceptions=True
        )
        failed: dict[str, Exception] = {}
        for (_, view, _), result in zip(items, results, strict=True):
            if isinstance(result, Exception):
                failed[view.run_id] = result
            elif isinstance(result, BaseException):
                raise result
        return failed

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

    async def recent(self, limit: int) -> list[RunView]:
        """The last ``limit`` finished runs; a record that does not decode is skipped."""
        values = [raw for _, raw in await self._scan_items("done.*")]
        views = []
        for raw in values[-limit:] if limit else []:
            try:
                views.append(RunView.model_validate_json(raw))
            except (ValidationError, ValueError, RecursionError) as exc:
                log.warning("skipped an unreadable finished run", error=str(exc)[:200])
        return views

    async def _scan_items(self, pattern: str) -> list[tuple[str, bytes]]:
        """Keys and current values matching a subject pattern (nats-py's ``keys(filters=)``
        matches substrings, and would need one more request per key)."""
        watcher = await self._kv.watch(pattern, ignore_deletes=True)
        items = []
        try:
            async for entry in watcher:
                if entry is None:
                    break
                if entry.value:
                    items.append((entry.key, entry.value))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return items

    async def _get(self, key: str) -> bytes | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        return entry.value
