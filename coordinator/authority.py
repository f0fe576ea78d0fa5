"""Who may say what: an agent's message counts only if its subject, its content and the
scheduler's books name the same worker.

NATS permissions (``deploy/nats/accounts.conf``) confine agent W to subjects with W in the
worker position (``Subjects.agent_publish``). That is only worth something if the
coordinator believes the subject and not the message: a heartbeat on W's subject that
says it is V, an outcome on W's subject for an attempt V holds, would still let W speak
for V. Each check here returns None when the message may be applied, else one line
saying why not; the service drops it, counts it and logs that line. Pure: no I/O, no
clock, and the scheduler is only read.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.scheduling.machine import Scheduler
from coordinator.scheduling.recovery import orphan_counts
from coordinator.scheduling.state import IN_FLIGHT
from shared.wire.protocol import (
    Accept,
    AttemptRef,
    Deregister,
    Heartbeat,
    MessageModel,
    Outcome,
    Register,
    Reject,
)

SENT_ON: dict[str, tuple[type[MessageModel], ...]] = {
    "register": (Register,),
    "heartbeat": (Heartbeat,),
    "deregister": (Deregister,),
    "ack": (Accept, Reject),
}
"""Which messages each agent subject kind (``Subjects.parse_sender``) carries."""


@dataclass(frozen=True, slots=True)
class Holding:
    """What the scheduler's books say of one attempt."""

    tracked: bool
    """The attempt is its node's current one, placed or running."""
    worker: str | None = None
    """The worker it was given to (None: restored, no agent has reported it yet)."""
    adoptable: bool = False
    """Untracked, but an outcome for it would be adopted (``recovery.orphan_counts``)."""


def holding(scheduler: Scheduler, ref: AttemptRef) -> Holding:
    """Read (never change) what the scheduler knows of ``ref``."""
    run = scheduler.runs.get(ref.run_id)
    node = run.nodes.get(ref.node_id) if run is not None else None
    if node is None:
        return Holding(tracked=False)
    if node.attempt == ref.attempt and node.status in IN_FLIGHT:
        return Holding(tracked=True, worker=node.worker)
    return Holding(tracked=False, adoptable=orphan_counts(run, node, ref))


def claimed_workers(item: MessageModel) -> tuple[str, ...]:
    """Every worker name a control message speaks for (a heartbeat's capacity names one
    too: the pool keys the worker by it)."""
    if isinstance(item, Register):
        return (item.spec.name,)
    if isinstance(item, Heartbeat):
        return (item.worker, item.capacity.name)
    if isinstance(item, Deregister | Accept | Reject):
        return (item.worker,)
    return ()


def control_refusal(kind: str, sender: str, item: MessageModel) -> str | None:
    """A register, heartbeat, deregister, accept or reject received on agent ``sender``'s
    subject of ``kind``: it must be of that kind and speak for ``sender`` alone."""
    allowed = SENT_ON.get(kind, ())
    if not isinstance(item, allowed):
        return f"a {item.type!r} message on a {kind} subject"
    others = sorted({name for name in claimed_workers(item) if name != sender})
    if others:
        return f"sent on worker {sender!r}'s subject but names {', '.join(map(repr, others))}"
    return None


def answer_refusal(sender: str, held: Holding) -> str | None:
    """An accept or reject by ``sender`` of an attempt another worker holds."""
    if held.tracked and held.worker is not None and held.worker != sender:
        return f"answers for an attempt assigned to {held.worker!r}"
    return None


def outcome_refusal(sender: str, outcome: Outcome, held: Holding, settled: bool) -> str | None:
    """An outcome stored on agent ``sender``'s subject. It counts only from the worker the
    attempt is assigned to. An attempt nobody tracks is adopted by the scheduler when it
    could have run unseen, which happens after a coordinator restart; once the coordinator
    has ``settled`` (its agents have reported), such an outcome, or one for a restored
    attempt no agent has claimed, is a claim for work never given to the sender.
    Superseded and duplicate outcomes pass: the scheduler ignores them."""
    if outcome.worker != sender:
        return f"stored on worker {sender!r}'s subject but names {outcome.worker!r}"
    unowned = held.worker is None if held.tracked else held.adoptable
    if unowned and settled:
        return f"an outcome for attempt {outcome.ref.key!r}, which is assigned to no worker"
    return answer_refusal(sender, held)
