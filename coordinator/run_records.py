"""What the run store keeps, as bytes: pure encoding and decoding, no I/O (``store.py``
reads and writes them).

A live record is a run's submission and latest view; a queued record holds many runs
still waiting as submitted (``checkpoint.py``). Neither read may raise on bad bytes: a
restart that stopped on one record written by a bug would stop every later start.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from shared.wire.protocol import Part
from shared.wire.runs import RunView, Submit


class StoredRun(Part):
    submit: Submit
    view: RunView


class QueuedRun(Part):
    submitted_at: float
    submit: Submit


class QueuedRecord(Part):
    runs: list[QueuedRun]


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A run's record that did not decode: its run id, the raw bytes and why."""

    run_id: str
    raw: bytes
    error: str


@dataclass(frozen=True, slots=True)
class QueuedRead:
    """A queued record read back: its readable runs, those unreadable that name their
    run, and what else could not be read (to log)."""

    runs: list[QueuedRun] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def live_record(submit: Submit | bytes, view: RunView) -> bytes:
    """A ``StoredRun`` as JSON. A submission given as JSON (a dormant run keeps it so,
    ``RunState.doze``) goes in as it is, not decoded to be encoded again."""
    if isinstance(submit, Submit):
        return StoredRun(submit=submit, view=view).model_dump_json().encode()
    return b'{"submit":' + submit + b',"view":' + view.model_dump_json().encode() + b"}"


def read_live(key: str, raw: bytes) -> StoredRun | Unreadable:
    """One live record, or why it cannot be resumed (never an exception)."""
    try:
        return StoredRun.model_validate_json(raw)
    except (ValidationError, ValueError, RecursionError) as exc:
        return Unreadable(key.removeprefix("live."), raw, _why(exc))


def queued_record(runs: Sequence[tuple[float, bytes]]) -> bytes:
    """Runs waiting as submitted, each its ``submitted_at`` and submission JSON (as a
    dormant run keeps it: not decoded to be encoded again)."""
    items = (
        b'{"submitted_at":' + json.dumps(at).encode() + b',"submit":' + raw + b"}"
        for at, raw in runs
    )
    return b'{"runs":[' + b",".join(items) + b"]}"


def read_queued(raw: bytes) -> QueuedRead | None:
    """A queued record's runs, item by item when the whole does not validate; None for a
    record that does not decode at all."""
    with contextlib.suppress(ValidationError, ValueError, RecursionError):
        return QueuedRead(QueuedRecord.model_validate_json(raw).runs)  # parsed in one go
    try:
        items = json.loads(raw)["runs"]
        assert isinstance(items, list)
    except (ValueError, KeyError, TypeError, AssertionError, RecursionError):
        return None
    read = QueuedRead()
    for item in items:
        try:
            read.runs.append(QueuedRun.model_validate(item))
        except (ValidationError, ValueError, RecursionError) as exc:
            submit = item.get("submit") if isinstance(item, dict) else None
            run_id = submit.get("run_id") if isinstance(submit, dict) else None
            if isinstance(run_id, str) and run_id:
                read.unreadable.append(Unreadable(run_id, json.dumps(item).encode(), _why(exc)))
            else:
                read.problems.append(str(exc)[:200])
    return read


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
