"""The pool's view of one worker: the shared ``Ledger`` plus its identity and index keys."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from shared.capacity import DevicePick, Ledger
from shared.resources import WorkerSpec

__all__ = ["DevicePick", "WorkerState"]


@dataclass(slots=True, eq=False, kw_only=True)
class WorkerState(Ledger):
    name: str
    seq: int
    spec: WorkerSpec
    index_keys: list[int] = field(default_factory=list)
    stamp: int = 0
    """Bumped whenever the worker's free capacity changes."""
    scores: dict[Hashable, Any] = field(default_factory=dict)
    """What ``fragment.py`` found for this worker's current state, per request key; the
    pool empties it with each change."""
    scored_with: object = None
    """The class table ``scores`` and ``before`` were found with."""
    before: tuple[int, float] | None = None
    """This worker's device state in that table and its ``frag`` now; cleared with each
    change."""

    @classmethod
    def create(cls, spec: WorkerSpec, seq: int) -> WorkerState:
        return cls.of(spec, name=spec.name, seq=seq, spec=spec)

    @property
    def labels(self) -> dict[str, str]:
        return self.spec.labels
