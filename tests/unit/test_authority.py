"""coordinator/authority.py: a message counts only when its subject, its content and the
scheduler's books name the same worker. Pure checks, driven with a real Scheduler."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.authority import (
    Holding,
    answer_refusal,
    claimed_workers,
    control_refusal,
    holding,
    outcome_refusal,
)
from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.scheduling.machine import Scheduler, SchedulerConfig
from shared.dag import Dag, Node
from shared.resources import WorkerSpec
from shared.wire.protocol import (
    Accept,
    Assignment,
    AttemptRef,
    Deregister,
    Heartbeat,
    Outcome,
    Register,
    Reject,
)
from shared.wire.runs import Submit

TASK = "app:work"


def spec(name: str, cpu: float = 4) -> WorkerSpec:
    return WorkerSpec(name=name, cpu=cpu, ram_mb=4096)


def register(name: str, spec_name: str | None = None, cpu: float = 4) -> Register:
    return Register(
        spec=spec(spec_name or name, cpu),
        agent_version="test",
        pid=1,
        started_at=1.0,
        heartbeat_interval=1000.0,
        tasks=(TASK,),
    )


def heartbeat(name: str) -> Heartbeat:
    return Heartbeat(
        worker=name,
        started_at=1.0,
        seq=1,
        interval=1000.0,
        capacity=spec(name),
        cpu_percent=0.0,
        available_ram_mb=4096,
    )


def outcome(ref: AttemptRef, worker: str, value: Any = 1) -> Outcome:
    return Outcome(
        ref=ref, worker=worker, status="succeeded", return_value=value, started_at=2, finished_at=2
    )


REF = AttemptRef(run_id="r1", node_id="a", attempt=1)


@pytest.fixture
def placed() -> tuple[Scheduler, Assignment, str]:
    """Two workers; one attempt placed on one of them."""
    sched = Scheduler(ResourceAwareWorkerPool(), SchedulerConfig(), rand=lambda: 0.5)
    sched.start(0.0)
    for name in ("a1", "a2"):
        sched.register(register(name), 0.0)
    dag = Dag(nodes=(Node(id="a", task=TASK),))
    sched.submit(Submit(run_id="r1", dag=dag), 0.0)
    sched.tick(100.0)
    ((worker, (assignment,)),) = sched.take().assign.items()
    return sched, assignment, worker


# -- control messages ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "item"),
    [
        ("register", register("a1")),
        ("heartbeat", heartbeat("a1")),
        ("deregister", Deregister(worker="a1")),
        ("ack", Accept(ref=REF, worker="a1")),
        ("ack", Reject(ref=REF, worker="a1", code="capacity", reason="full")),
    ],
)
def test_an_agent_may_speak_for_itself(kind: str, item: Any) -> None:
    assert control_refusal(kind, "a1", item) is None


@pytest.mark.parametrize(
    ("kind", "item", "names"),
    [
        ("register", register("ghost", cpu=1000), "'ghost'"),
        ("heartbeat", heartbeat("a2"), "'a2'"),
        ("deregister", Deregister(worker="a2"), "'a2'"),
        ("ack", Accept(ref=REF, worker="a2"), "'a2'"),
        ("ack", Reject(ref=REF, worker="a2", code="capacity", reason="x"), "'a2'"),
    ],
)
def test_an_agent_cannot_speak_for_another_worker(kind: str, item: Any, names: str) -> None:
    why = control_refusal(kind, "a1", item)
    assert why == f"sent on worker 'a1''s subject but names {names}"


@pytest.mark.parametrize(
    ("kind", "item"),
    [
        ("heartbeat", register("a1")),
        ("register", Deregister(worker="a1")),
        ("deregister", heartbeat("a1")),
        ("ack", Deregister(worker="a1")),
        ("nonsense", Accept(ref=REF, worker="a1")),
    ],
)
def test_a_message_must_be_of_its_subjects_kind(kind: str, item: Any) -> None:
    assert control_refusal(kind, "a1", item) == f"a {item.type!r} message on a {kind} subject"


def test_claimed_workers_name_what_the_scheduler_would_key_by() -> None:
    assert claimed_workers(heartbeat("a1")) == ("a1", "a1")
    assert claimed_workers(register("x", spec_name="y")) == ("y",)


def test_answers_count_only_from_the_attempts_worker(
    placed: tuple[Scheduler, Assignment, str],
) -> None:
    sched, a, worker = placed
    other = "a2" if worker == "a1" else "a1"
    held = holding(sched, a.ref)
    assert held == Holding(tracked=True, worker=worker)
    assert answer_refusal(worker, held) is None
    assert answer_refusal(other, held) == f"answers for an attempt assigned to {worker!r}"
    assert answer_refusal(other, Holding(tracked=False)) is None  # the scheduler ignores it


# -- outcomes ------------------------------------------------------------------------------


def test_an_outcome_counts_from_the_worker_holding_the_attempt(
    placed: tuple[Scheduler, Assignment, str],
) -> None:
    sched, a, worker = placed
    held = holding(sched, a.ref)
    assert outcome_refusal(worker, outcome(a.ref, worker), held, settled=True) is None


def test_an_outcome_on_one_workers_subject_naming_another_is_refused(
    placed: tuple[Scheduler, Assignment, str],
) -> None:
    sched, a, worker = placed
    other = "a2" if worker == "a1" else "a1"
    held = holding(sched, a.ref)
    why = outcome_refusal(other, outcome(a.ref, worker), held, settled=True)
    assert why == f"stored on worker {other!r}'s subject but names {worker!r}"


def test_an_outcome_for_another_workers_attempt_is_refused(
    placed: tuple[Scheduler, Assignment, str],
) -> None:
    sched, a, worker = placed
    other = "a2" if worker == "a1" else "a1"
    held = holding(sched, a.ref)
    why = outcome_refusal(other, outcome(a.ref, other, "forged"), held, settled=True)
    assert why == f"answers for an attempt assigned to {worker!r}"


def test_an_unassigned_attempt_is_adopted_only_while_the_coordinator_settles(
    placed: tuple[Scheduler, Assignment, str],
) -> None:
    """The next attempt of a node nobody holds (after a restart, a dispatch the store
    never saw) would be adopted from whoever reports it: only while settling."""
    sched, a, worker = placed
    sched.rejected(Reject(ref=a.ref, worker=worker, code="capacity", reason="full"), 100.0)
    assert sched.runs["r1"].nodes["a"].status == "ready"
    ahead = AttemptRef(run_id="r1", node_id="a", attempt=a.ref.attempt + 1)
    held = holding(sched, ahead)
    assert held == Holding(tracked=False, adoptable=True)
    claim = outcome(ahead, "a2", "forged")
    assert outcome_refusal("a2", claim, held, settled=False) is None
    why = outcome_refusal("a2", claim, held, settled=True)
    assert why == f"an outcome for attempt {ahead.key!r}, which is assigned to no worker"


def test_superseded_and_unknown_outcomes_pass_to_the_scheduler(
    placed: tuple[Scheduler, Assignment, str],
) -> None:
    sched, a, worker = placed
    sched.outcome(outcome(a.ref, worker), 101.0)
    again = holding(sched, a.ref)  # a duplicate after the node finished
    assert again == Holding(tracked=False, adoptable=False)
    assert outcome_refusal(worker, outcome(a.ref, worker), again, settled=True) is None
    unknown = AttemptRef(run_id="nope", node_id="a", attempt=1)
    assert holding(sched, unknown) == Holding(tracked=False)
    assert outcome_refusal("a1", outcome(unknown, "a1"), holding(sched, unknown), True) is None


def test_a_restored_attempt_nobody_claimed_counts_only_while_settling() -> None:
    held = Holding(tracked=True, worker=None)
    claim = outcome(REF, "a1")
    assert outcome_refusal("a1", claim, held, settled=False) is None
    assert outcome_refusal("a1", claim, held, settled=True) is not None
