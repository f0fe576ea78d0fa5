"""The node and run lifecycles as tables: which status changes are possible, and what
bookkeeping each one carries. Pure data; ``Scheduler._move`` is the only reader.

A status change is looked up by ``(from, to)``. A missing key is a bug in the
scheduler (a finished node running again, a run ending twice), raised at once as
``InvalidTransition`` with the node's recent history instead of a corrupt run found
later. The entry names the effects ``Scheduler`` runs on that change, so counts such
as a run's nodes in flight are kept in one place, by the table, never by hand:

- ``fly``: the node starts an attempt that holds capacity (its attempt is tracked and
  counted in its run's in-flight count);
- ``land``: the attempt ends (its reservation is released and it is no longer tracked
  or counted);
- ``end``: the node is finished for good (its run has one node fewer to wait for);
- ``stop``: the attempt is cancelled: untracked and uncounted like ``land``, but its
  reservation is kept until its agent reports it ended (``stopping.py``).

Some entries are only for rebuilding a run from the store (``restore_only``): there a
node enters the status it was stored with straight from ``pending``, without replaying
the attempts that led to it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from shared.wire.runs import NodeStatus, RunStatus

Effect = Literal["fly", "land", "end", "stop"]
RunEffect = Literal["stop_nodes", "announce"]
HISTORY = 8
"""Status changes remembered per node: enough to explain an impossible one."""


@dataclass(frozen=True, slots=True)
class Transition:
    effects: tuple[Effect, ...] = ()
    restore_only: bool = False


_FINISH = Transition(("end",))
_LAND_FINISH = Transition(("land", "end"))
_FLY = Transition(("fly",))
_STOP_FINISH = Transition(("stop", "end"))

NODE_TRANSITIONS: dict[tuple[NodeStatus, NodeStatus], Transition] = {
    ("pending", "ready"): Transition(),
    ("pending", "skipped"): _FINISH,
    ("pending", "cancelled"): _FINISH,
    ("pending", "failed"): _FINISH,
    # An attempt adopted after a restart, reported before its upstream's outcome was
    # applied again (or its own outcome arriving first: an orphan).
    ("pending", "running"): _FLY,
    ("ready", "placed"): _FLY,
    ("ready", "running"): _FLY,
    ("ready", "failed"): _FINISH,
    # A batch member ends with its element of its batch run's result (``batches.py``).
    ("ready", "succeeded"): _FINISH,
    ("ready", "skipped"): _FINISH,
    ("ready", "cancelled"): _FINISH,
    ("placed", "running"): Transition(),
    ("placed", "ready"): Transition(("land",)),
    ("placed", "succeeded"): _LAND_FINISH,
    ("placed", "failed"): _LAND_FINISH,
    ("placed", "cancelled"): _STOP_FINISH,
    ("running", "ready"): Transition(("land",)),
    ("running", "succeeded"): _LAND_FINISH,
    ("running", "failed"): _LAND_FINISH,
    ("running", "cancelled"): _STOP_FINISH,
    # A chained attempt (``Scheduler._chain``): sent while its upstream still runs; back to
    # waiting when that one did not succeed (cancelled on its worker, as any stopped
    # attempt), or when it is to be placed again before its upstream's outcome is applied.
    ("pending", "placed"): _FLY,
    ("placed", "pending"): Transition(("stop",)),
    ("running", "pending"): Transition(("stop",)),
    ("ready", "pending"): Transition(),
    # A run rebuilt from the store: the node takes its stored status.
    ("pending", "succeeded"): Transition(("end",), restore_only=True),
}

RUN_TRANSITIONS: dict[tuple[RunStatus, RunStatus], tuple[RunEffect, ...]] = {
    ("running", "succeeded"): ("stop_nodes", "announce"),
    ("running", "failed"): ("stop_nodes", "announce"),
    ("running", "cancelled"): ("stop_nodes", "announce"),
}


@dataclass(frozen=True, slots=True)
class Step:
    """One status change of a node, kept for the error an impossible one raises."""

    old: NodeStatus
    new: NodeStatus
    why: str
    at: float

    def __str__(self) -> str:
        return f"{self.at:.3f}: {self.old} -> {self.new} ({self.why})"


def history() -> deque[Step]:
    return deque(maxlen=HISTORY)


class InvalidTransition(Exception):
    """A status change the tables do not allow: a scheduler bug, with the evidence."""

    def __init__(
        self, subject: str, old: str, new: str, why: str, steps: tuple[Step, ...] = ()
    ) -> None:
        self.subject, self.old, self.new, self.why, self.steps = subject, old, new, why, steps
        lines = [f"{subject}: {old} -> {new} is not a legal transition ({why})"]
        if steps:
            lines.append("recent history:")
            lines.extend(f"  {step}" for step in steps)
        super().__init__("\n".join(lines))
