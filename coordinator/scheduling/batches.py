"""Batching where the queue is: members of ``batch=True`` tasks wait here, grouped, until
they run together as one node.

Each ``kiq`` of a batched task is an ordinary, durable run whose one node is a *member*
(``Node.batch``). When a member is ready, the scheduler hands it here instead of to the
ready queue. Members of one task with the same other arguments and settings share a
group, whichever producer sent them; a group is *formed* into a batch run when it holds
``size`` members, or ``timeout`` seconds after its oldest member arrived (the scheduler's
``tick`` brings the time). A batch run is an ordinary one-node run, so it is placed,
reserved and retried once for all its members; its ``Submit.members`` names them in item
order and it is stored like any run. A restarted coordinator therefore rebuilds the same
batch and *claims* its members back (``claim``) instead of grouping them anew: the attempt
an agent still runs, or its outcome, maps to the members it ran with. When the batch run
ends, each member still in it ends with its element of the result (the whole result
unless that is a list as long as the batch), or with the batch's error (``ended``).

Members stay ``ready`` meanwhile: nothing of theirs is in flight, so they hold no
reservation and count against no limit; their batch run does. A member run that ends
another way (cancelled, timed out) leaves its group or batch, and a batch left with no
member is cancelled. No clock reads and no I/O: times come in with the events.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import JsonValue

from coordinator.scheduling.state import NodeState, RunState
from shared.dag import Dag, Node, RunOptions
from shared.wire.protocol import ErrorInfo, PayloadRef
from shared.wire.runs import Submit

BATCH_NODE = "batch"
RESULT = "result"
"""The batch node's id and its one output (the function's whole result)."""


@dataclass(frozen=True, slots=True)
class Ending:
    """How one member ends with its batch: a value (or a stored one), an error, or a
    cancel with its reason."""

    member: NodeState
    value: JsonValue = None
    ref: PayloadRef | None = None
    error: ErrorInfo | None = None
    cancelled: str = ""


@dataclass(eq=False, slots=True)
class _Group:
    key: str
    size: int
    timeout: float
    armed: int
    """The sequence number of this group's live entry in the deadline heap."""
    waiting: dict[str, tuple[NodeState, float]]
    """Member run id -> (its node, when it arrived), oldest first."""

    def deadline(self) -> float:
        _, since = next(iter(self.waiting.values()))
        return since + self.timeout


@dataclass(eq=False, slots=True)
class _Batch:
    members: tuple[str, ...]
    slots: list[NodeState | None]
    """The member nodes waiting for this batch, by item index (None: gone, or not back)."""


class Batches:
    """Groups of waiting members, and the members of each batch run not ended yet."""

    def __init__(self, prefix: str = "batch") -> None:
        self._prefix = prefix
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        self._groups: dict[str, _Group] = {}
        self._deadlines: list[tuple[float, int, str]] = []
        self._full: dict[str, None] = {}
        self._held: dict[str, str] = {}
        """Member run id -> key of the group it waits in."""
        self._batches: dict[str, _Batch] = {}
        self._member_of: dict[str, tuple[str, int]] = {}
        """Member run id -> (batch run id, item index), for members of a batch not ended."""

    # -- events ------------------------------------------------------------------------

    def hold(self, state: NodeState, now: float) -> bool:
        """A ready node: keep it when it is a batch member (in its batch if one claimed
        it, else in its group); False for any other node."""
        spec = state.node.batch
        if spec is None:
            return False
        run_id = state.run.run_id
        found = self._member_of.get(run_id)
        if found is not None:
            self._attach(state, *found)
            return True
        key = group_key(state)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(key, spec.size, spec.timeout, next(self._seq), {})
            heapq.heappush(self._deadlines, (now + spec.timeout, group.armed, key))
        group.waiting[run_id] = (state, now)
        self._held[run_id] = key
        if len(group.waiting) >= group.size:
            self._full[key] = None
        return True

    def due(
        self, now: float, taken: Callable[[str], bool], everything: bool = False
    ) -> list[Submit]:
        """The batch runs to submit now: every full ``size`` of a group, and what waits in
        a group past its deadline (every group when ``everything``). ``taken`` tells run
        ids in use, which a new batch run's id must not be."""
        formed: list[Submit] = []
        for key in list(self._full):
            del self._full[key]
            group = self._groups.get(key)
            while group is not None and len(group.waiting) >= group.size:
                formed.append(self._form(group, group.size, taken, now))
                group = self._groups.get(key)
        while self._deadlines and (everything or self._deadlines[0][0] <= now):
            _, armed, key = heapq.heappop(self._deadlines)
            group = self._groups.get(key)
            if group is None or group.armed != armed:
                continue  # formed or emptied since
            if not everything and group.deadline() > now:  # its oldest member left
                heapq.heappush(self._deadlines, (group.deadline(), armed, key))
                continue
            while key in self._groups:
                formed.append(self._form(group, group.size, taken, now))
        return formed

    def claim(self, run: RunState) -> None:
        """A batch run rebuilt from the store: its members belong to it again, those
        already waiting in a group and those that come back later."""
        ids = run.submit.members
        if not ids or run.run_id in self._batches:
            return
        self._batches[run.run_id] = _Batch(ids, [None] * len(ids))
        for index, member in enumerate(ids):
            self._member_of[member] = (run.run_id, index)
            key = self._held.pop(member, None)
            if key is not None:
                state = self._take(self._groups[key], member)
                self._attach(state, run.run_id, index)

    def ended(self, run: RunState) -> tuple[list[Ending], str | None]:
        """A run ended. A batch run: how each of its members still waiting ends. A member
        run: it leaves its group or batch; the batch run to cancel if none is left."""
        batch = self._batches.pop(run.run_id, None)
        if batch is not None:
            return self._endings(run, batch), None
        return [], self._leave(run.run_id)

    # -- reads -------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """When a group may be due next (early after a group changed: a wake-up too many
        finds nothing due)."""
        return self._deadlines[0][0] if self._deadlines else None

    def members(self) -> list[NodeState]:
        """Every member node kept here: waiting in a group or in a batch run."""
        held = [s for g in self._groups.values() for s, _ in g.waiting.values()]
        return held + [s for b in self._batches.values() for s in b.slots if s is not None]

    def validate(self) -> None:
        """Each member kept here is ready in a running run and kept once (for tests)."""
        seen: set[str] = set()
        for state in self.members():
            name = f"member {state.run.run_id}"
            assert state.status == "ready", f"{name} is kept while {state.status}"
            assert state.run.status == "running", f"{name} is kept in an ended run"
            assert state.run.run_id not in seen, f"{name} is kept twice"
            seen.add(state.run.run_id)
        for key, group in self._groups.items():
            assert group.waiting, f"group {key} is kept empty"
            assert all(self._held.get(m) == key for m in group.waiting), f"{key}: index"

    # -- bookkeeping -------------------------------------------------------------------

    def _form(self, group: _Group, count: int, taken: Callable[[str], bool], now: float) -> Submit:
        ids = list(itertools.islice(group.waiting, count))
        members = [self._take(group, member) for member in ids]
        run_id = self._new_id(taken)
        self._batches[run_id] = _Batch(tuple(ids), [None] * len(ids))
        for index, state in enumerate(members):
            self._member_of[ids[index]] = (run_id, index)
            self._attach(state, run_id, index)
        return batch_submit(run_id, members, now)

    def _take(self, group: _Group, member: str) -> NodeState:
        state, _ = group.waiting.pop(member)
        self._held.pop(member, None)
        if not group.waiting:
            del self._groups[group.key]
        return state

    def _attach(self, state: NodeState, batch_id: str, index: int) -> None:
        batch = self._batches[batch_id]
        batch.slots[index] = state
        state.batch = batch_id
        state.reason = f"in batch {batch_id}, item {index + 1} of {len(batch.members)}"
        state.run.changed.add(state.id)
        state.run.touched.add(state.run.run_id)

    def _leave(self, member: str) -> str | None:
        key = self._held.get(member)
        if key is not None:
            self._take(self._groups[key], member)
            return None
        found = self._member_of.pop(member, None)
        batch = None if found is None else self._batches.get(found[0])
        if found is None or batch is None:
            return None
        batch_id, index = found
        batch.slots[index] = None
        alive = any(self._member_of.get(m) == (batch_id, i) for i, m in enumerate(batch.members))
        return None if alive else batch_id

    def _endings(self, run: RunState, batch: _Batch) -> list[Ending]:
        for index, member in enumerate(batch.members):
            if self._member_of.get(member) == (run.run_id, index):
                del self._member_of[member]
        node = next(iter(run.nodes.values()))
        count, endings = len(batch.members), []
        for index, state in enumerate(batch.slots):
            if state is None or state.status != "ready":
                continue
            state.worker, state.gpu_devices = node.worker, node.gpu_devices
            state.started_at, state.finished_at = node.started_at, node.finished_at
            endings.append(_ending(state, run, node, index, count))
        return endings

    def _new_id(self, taken: Callable[[str], bool]) -> str:
        while True:
            run_id = f"{self._prefix}-{next(self._ids)}"
            if not taken(run_id):
                return run_id


def _ending(state: NodeState, run: RunState, node: NodeState, index: int, count: int) -> Ending:
    if run.status == "succeeded":
        if RESULT in run.refs:  # stored by reference: the coordinator never reads it
            return Ending(state, ref=run.refs[RESULT])
        return Ending(state, value=element(run.values.get(RESULT), index, count))
    if run.status == "cancelled":
        return Ending(state, cancelled=f"batch {run.run_id} cancelled: {run.error}")
    error = node.error or ErrorInfo(type="BatchFailed", message=f"{run.run_id}: {run.error}")
    return Ending(state, error=error)


def element(value: JsonValue, index: int, count: int) -> JsonValue:
    """What member ``index`` of ``count`` gets: its element when the function returned a
    list as long as the batch, else the whole result."""
    if isinstance(value, list) and len(value) == count:
        return value[index]
    return value


def item_of(node: Node) -> JsonValue:
    spec = node.batch
    assert spec is not None
    return node.args[0] if spec.item is None else node.kwargs[spec.item]


def other_arguments(node: Node) -> tuple[tuple[JsonValue, ...], dict[str, JsonValue]]:
    """A member's arguments besides its item."""
    spec = node.batch
    assert spec is not None
    if spec.item is None:
        return node.args[1:], dict(node.kwargs)
    return node.args, {k: v for k, v in node.kwargs.items() if k != spec.item}


def group_key(state: NodeState) -> str:
    """Equal for members that may share a batch: same task, settings (request, retry,
    timeout, priority, labels, batch size and timeout) and other arguments."""
    node = state.node
    settings = node.model_dump(mode="json", exclude={"id", "args", "kwargs"})
    args, kwargs = other_arguments(node)
    key = [settings, args, kwargs, state.run.submit.options.priority]
    return json.dumps(key, sort_keys=True, separators=(",", ":"), default=repr)


def batch_submit(run_id: str, members: list[NodeState], now: float) -> Submit:
    """The batch run of ``members`` (one group, oldest first): the first member's node,
    with the list of their items in the item's place."""
    first = members[0]
    spec = first.node.batch
    assert spec is not None
    items = [item_of(state.node) for state in members]
    args, kwargs = other_arguments(first.node)
    if spec.item is None:
        args = (items, *args)
    else:
        kwargs[spec.item] = items
    node = first.node.model_copy(
        update={
            "id": BATCH_NODE,
            "args": args,
            "kwargs": kwargs,
            "outputs": (RESULT,),
            "batch": None,
        }
    )
    return Submit(
        run_id=run_id,
        name=f"batch of {first.node.task}",
        dag=Dag(nodes=(node,)),
        options=RunOptions(priority=first.run.submit.options.priority),
        submitted_at=max(now, 0.0),
        progress=False,
        members=tuple(state.run.run_id for state in members),
    )
