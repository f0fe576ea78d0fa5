"""The agent's side of chained attempts (``shared.wire.protocol.Continuation``).

The coordinator may send a chain's next node before the one it waits for has ended, under
the same lease, so it runs right after it here. The agent keeps the last outcomes of the
attempts it ran under leases; a chained attempt takes its upstream's outcome (once) and,
when that succeeded, the values it returned where ``takes`` says. When the upstream did
not succeed here, or its outcome is not kept any more, the chained attempt ends unrun
(cancelled): the coordinator places it again once it has the upstream's outcome.
"""

from __future__ import annotations

from collections import OrderedDict

from pydantic import JsonValue

from shared.wire.protocol import AttemptRef, Continuation, Outcome

KEPT = 64
"""Outcomes of lease members kept for a chained attempt that may still come: it is sent
with its upstream, or at most one lease's depth of steps later."""


class Upstreams:
    def __init__(self, kept: int = KEPT) -> None:
        self._kept = kept
        self._outcomes: OrderedDict[AttemptRef, Outcome] = OrderedDict()

    def ended(self, outcome: Outcome) -> None:
        """A lease member's outcome, which a chained attempt may need."""
        self._outcomes[outcome.ref] = outcome
        while len(self._outcomes) > self._kept:
            self._outcomes.popitem(last=False)

    def take(self, after: Continuation) -> Outcome | str:
        """The upstream's outcome when it succeeded here; else why the chained attempt
        cannot run. Taken once: one node waits for it alone."""
        found = self._outcomes.pop(after.ref, None)
        if found is None:
            return f"its upstream attempt {after.ref.key} did not end on this worker"
        if found.status != "succeeded":
            return f"its upstream attempt {after.ref.key} {found.status}"
        return found


def taken(after: Continuation, value: JsonValue) -> dict[str, JsonValue] | str:
    """The chained attempt's arguments (keys as ``Assignment.arg_refs``) from the value its
    upstream returned, split over that node's outputs as the coordinator would store them;
    else why they cannot be."""
    outputs = after.outputs
    named: dict[str, JsonValue] = {}
    if len(outputs) == 1:
        named[outputs[0]] = value
    elif outputs:
        if not isinstance(value, list) or len(value) != len(outputs):
            return f"its upstream declares {len(outputs)} outputs and returned something else"
        named.update(zip(outputs, value, strict=True))
    missing = sorted(set(after.takes.values()) - set(named))
    if missing:
        return f"its upstream has no output named {missing}"
    return {key: named[name] for key, name in after.takes.items()}
