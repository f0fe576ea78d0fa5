"""Run state in JetStream KV: what a restarted coordinator resumes from.

Two key spaces in the runs bucket: ``live.<run>`` holds the submission and the
latest view of a running run; ``done.<run>`` holds the final view. A restart
lists only ``live.*``, so resuming costs what is running, not the history.
Writes are behind the scheduler, never in front of it: a crash loses at most
the last writes, and the agents' heartbeats and the unacknowledged outcomes
in JetStream fill that gap.
"""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from shared.wire.protocol import Part
from shared.wire.runs import RunView, Submit
from shared.wire.subjects import Subjects, token

HISTORY_TTL = 7 * 24 * 3600.0


class StoredRun(Part):
    submit: Submit
    view: RunView


def _live(run_id: str) -> str:
    return f"live.{token(run_id)}"


def _done(run_id: str) -> str:
    return f"done.{token(run_id)}"


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
            await self._kv.put(_done(view.run_id), view.model_dump_json().encode())
            if had_live:
                await self._kv.delete(_live(view.run_id))
        else:
            stored = StoredRun(submit=submit, view=view)
            await self._kv.put(_live(view.run_id), stored.model_dump_json().encode())

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
        return [StoredRun.model_validate_json(v) for v in await self._scan("live.*")]

    async def view(self, run_id: str) -> RunView | None:
        done = await self._get(_done(run_id))
        if done is not None:
            return RunView.model_validate_json(done)
        live = await self._get(_live(run_id))
        return None if live is None else StoredRun.model_validate_json(live).view

    async def recent(self, limit: int) -> list[RunView]:
        values = await self._scan("done.*")
        return [RunView.model_validate_json(v) for v in values[-limit:]] if limit else []

    async def _scan(self, pattern: str) -> list[bytes]:
        """Current values of the keys matching a subject pattern (nats-py's ``keys(filters=)``
        matches substrings, and would need one more request per key)."""
        watcher = await self._kv.watch(pattern, ignore_deletes=True)
        values = []
        try:
            async for entry in watcher:
                if entry is None:
                    break
                if entry.value:
                    values.append(entry.value)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return values

    async def _get(self, key: str) -> bytes | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        return entry.value
