"""The pool's view of one worker: the shared ``Ledger`` plus its identity and index keys."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    scores: object = None
    """What ``fragment.py`` computed for this worker's current state; cleared with each
    change."""

    @classmethod
    def create(cls, spec: WorkerSpec, seq: int) -> WorkerState:
        return cls.of(spec, name=spec.name, seq=seq, spec=spec)

    @property
    def labels(self) -> dict[str, str]:
        return self.spec.labels
