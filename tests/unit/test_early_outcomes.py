"""Item 6: an execution has its own attempt identity, and a finished node is not run again.

A coordinator killed within a second of a submission has stored neither the run nor its
acknowledgement; the node's outcome, stored while no coordinator ran, reaches the
restarted one before the submission is delivered again. These drive the pure Scheduler
through that order of events.
"""

from __future__ import annotations

from typing import Any

from coordinator.scheduling.early import EarlyOutcomes
from coordinator.scheduling.machine import Scheduler, SchedulerConfig
from shared.dag import Dag
from shared.wire.protocol import AttemptRef, Outcome
from shared.wire.runs import NodeView, RunView, Submit
from tests.unit.test_scheduler import TASK, Cluster, by_node, cancels, n, only

START = 100.0


def outcome(run: str, node: str, attempt: int = 1, value: Any = None, **ref: Any) -> Outcome:
    return Outcome(
        ref=AttemptRef(run_id=run, node_id=node, attempt=attempt, **ref),
        worker="w1",
        status="succeeded",
        return_value=value,
        started_at=START - 1,
        finished_at=START - 0.5,
    )


def restarted(**config: Any) -> Cluster:
    """A coordinator that just started, with one agent that has registered."""
    c = Cluster(warmup=5.0, **config)
    c.sched.start(START)
    c.register("w1", at=START, cpu=4)
    return c


def test_an_outcome_before_its_submission_is_applied_when_the_submission_arrives() -> None:
    c = restarted()
    c.sched.outcome(outcome("r1", "a", value=6), START + 0.1)
    assert c.sched.holds_early({"r1"}), "kept, and its message not acknowledged"
    c.submit("r1", n("a", outputs=("av",)), n("b", inputs={"y": "av"}), at=START + 2)
    assert not c.sched.holds_early({"r1"})
    assert c.status("r1") == {"a": "succeeded", "b": "ready"}
    w, b = only(c.tick(START + 10))
    assert (w, b.ref.node_id, b.kwargs) == ("w1", "b", {"y": 6}), "a is not run again"
    c.succeed(b, w, START + 11)
    assert c.view("r1").status == "succeeded"
    c.sched.validate_state()


def test_a_single_node_run_whose_outcome_came_first_ends_without_an_assignment() -> None:
    c = restarted()
    c.sched.outcome(outcome("r1", "a", value=1), START + 0.1)
    c.submit("r1", n("a", outputs=("av",)), at=START + 2)
    d = c.tick(START + 10)
    assert d.assign == {}
    assert c.view("r1").status == "succeeded"
    assert c.view("r1").outputs == {"av": 1}
    assert c.reserved_keys() == set()
    c.sched.validate_state()


def test_early_outcomes_of_a_chain_apply_in_any_order() -> None:
    c = restarted()
    c.sched.outcome(outcome("r1", "b", value=2), START + 0.1)
    c.sched.outcome(outcome("r1", "a", value=1), START + 0.2)
    c.submit("r1", n("a", outputs=("av",)), n("b", inputs={"y": "av"}), at=START + 2)
    assert c.tick(START + 10).assign == {}
    assert c.view("r1").status == "succeeded"
    c.sched.validate_state()


def test_an_outcome_of_an_unknown_run_once_settled_is_not_kept() -> None:
    """Agents have reported: no submission can be pending for work nobody was given."""
    c = restarted()
    c.tick(START + 6)
    c.sched.outcome(outcome("r1", "a"), START + 6)
    assert not c.sched.holds_early({"r1"})
    c.submit("r1", n("a"), at=START + 7)
    assert by_node(c.tick(START + 7)).keys() == {"a"}


def test_early_outcomes_are_given_up_after_their_age_and_not_kept_again() -> None:
    c = restarted()
    c.sched.outcome(outcome("r1", "a"), START + 0.1)
    c.tick(START + 0.2)
    assert c.sched.holds_early({"r1"})
    c.sched.tick(START + 61)
    assert not c.sched.holds_early({"r1"}), "its message is acknowledged"
    c.sched.start(START + 61)  # even before agents report again
    c.sched.outcome(outcome("r1", "a"), START + 61)
    assert not c.sched.holds_early({"r1"}), "a copy delivered again is not kept again"


def test_early_outcomes_are_bounded_in_number() -> None:
    early = EarlyOutcomes(limit=2, max_age=60)
    for run in ("r1", "r2", "r3"):
        assert early.keep(outcome(run, "a"), START)
    assert len(early) == 2
    assert not early.holds({"r1"}), "the oldest was given up"
    assert early.holds({"r2", "r3"})
    assert early.keep(outcome("r1", "a"), START) is False
    assert [o.ref.run_id for o in early.take("r3")] == ["r3"]
    assert len(early) == 1


def test_a_copy_of_a_kept_outcome_is_kept_once() -> None:
    early = EarlyOutcomes()
    early.keep(outcome("r1", "a", value=1), START)
    early.keep(outcome("r1", "a", value=2), START + 1)
    assert [o.return_value for o in early.take("r1")] == [1]


def test_an_outcome_of_an_ended_run_is_not_kept() -> None:
    c = restarted()
    c.tick(START + 6)
    c.submit("r1", n("a"), at=START + 6)
    _, a = only(c.tick(START + 6))
    c.succeed(a, "w1", START + 7)
    c.sched.forget("r1")
    c.sched.start(START + 8)
    c.sched.outcome(outcome("r1", "a"), START + 8)
    assert not c.sched.holds_early({"r1"})


# -- restored runs -------------------------------------------------------------------------


def restore(c: Cluster, *nodes: NodeView) -> None:
    dag = Dag(nodes=(n("a", outputs=("av",)), n("b", inputs={"y": "av"})))
    view = RunView(run_id="r1", submitted_at=50, nodes=nodes)
    c.sched.restore(Submit(run_id="r1", dag=dag), view, START, 10.0)


def test_a_restored_node_with_a_stored_outcome_is_not_assigned_again() -> None:
    c = restarted()
    restore(
        c,
        NodeView(id="a", task=TASK, status="succeeded", attempt=1, worker="w1"),
        NodeView(id="b", task=TASK, status="pending"),
    )
    c.beat("w1", START + 1)
    assert by_node(c.tick(START + 10)).keys() == {"b"}


def test_a_restored_attempt_whose_outcome_comes_before_any_report_is_not_run_again() -> None:
    """The store does not keep which coordinator lifetime made the attempt: the outcome's
    identity is taken for it, its result counts, and the node is not placed again."""
    c = restarted()
    restore(
        c,
        NodeView(id="a", task=TASK, status="running", attempt=1, worker="w1"),
        NodeView(id="b", task=TASK, status="pending"),
    )
    c.sched.outcome(outcome("r1", "a", value=5, incarnation="before"), START + 0.1)
    assert c.status("r1") == {"a": "succeeded", "b": "ready"}
    c.beat("w1", START + 1)
    _, b = only(c.tick(START + 20))
    assert (b.ref.node_id, b.kwargs) == ("b", {"y": 5})
    c.sched.validate_state()


def test_a_restored_attempt_listed_under_its_lifetime_is_adopted() -> None:
    c = restarted()
    restore(
        c,
        NodeView(id="a", task=TASK, status="running", attempt=1, worker="w1"),
        NodeView(id="b", task=TASK, status="pending"),
    )
    listed = AttemptRef(run_id="r1", node_id="a", attempt=1, incarnation="before")
    c.beat("w1", START + 1, running=(listed,))
    assert c.pool.reservation(listed) is not None
    assert c.tick(START + 20).assign == {}, "adopted, not run again after the grace"
    c.sched.validate_state()


# -- attempt identities ----------------------------------------------------------------------


def test_attempts_carry_the_incarnation_of_the_coordinator_that_made_them() -> None:
    one = Cluster()
    one.sched = Scheduler(one.pool, SchedulerConfig(), incarnation="one")
    one.register("w1")
    one.submit("r1", n("a"))
    _, a = only(one.tick(0))
    assert a.ref == AttemptRef(run_id="r1", node_id="a", attempt=1, incarnation="one")
    assert one.reserved_keys() == {a.ref}
    two = Cluster()
    two.sched = Scheduler(two.pool, SchedulerConfig(), incarnation="two")
    two.register("w1")
    two.submit("r1", n("a"))
    _, again = only(two.tick(0))
    assert again.ref.key == a.ref.key, "the same number, shown the same way"
    assert again.ref != a.ref, "but another attempt"


def test_another_lifetimes_attempt_of_the_tracked_number_is_cancelled() -> None:
    c = Cluster()
    c.sched = Scheduler(c.pool, SchedulerConfig(), incarnation="now")
    c.register("w1")
    c.submit("r1", n("a"))
    _, a = only(c.tick(0))
    c.beat("w1", 1, running=(a.ref,))
    other = a.ref.model_copy(update={"incarnation": "before"})
    c.beat("w1", 2, running=(a.ref, other))
    assert cancels(c.sched.take()) == {"w1": {other.key}}
    assert c.sched.in_flight == 1
    c.sched.validate_state()


def test_an_attempt_ref_without_an_incarnation_still_decodes() -> None:
    ref = AttemptRef.model_validate_json(b'{"run_id": "r1", "node_id": "a", "attempt": 2}')
    assert ref.incarnation == ""
    assert ref.key == "r1.a.2"


def test_a_term_that_heard_every_worker_still_waits_for_the_stored_outcomes() -> None:
    """A new leader asks the workers a standby heard to register, and is settled once they
    have; but the outcomes stored before its term may still be on their way, so nothing
    is placed until the service says they were applied (``replayed``)."""
    c = Cluster(warmup=5.0)
    c.sched.start(START, redelivery=6.0, expect=("w1",))
    c.register("w1", at=START, cpu=4)
    c.submit("r1", n("a", outputs=("av",)), at=START + 0.1)
    assert c.tick(START + 0.2).assign == {}, "placed before the stored outcomes were read"
    c.sched.outcome(outcome("r1", "a", value=1), START + 0.3)
    c.sched.replayed(START + 0.3)
    assert c.tick(START + 0.4).assign == {}
    assert c.view("r1").status == "succeeded"
    c.sched.validate_state()


def test_a_term_with_nothing_stored_to_replay_places_as_soon_as_its_workers_reported() -> None:
    c = Cluster(warmup=5.0)
    c.sched.start(START, redelivery=6.0, expect=("w1",))
    c.sched.replayed(START)
    c.register("w1", at=START + 0.05, cpu=4)
    c.submit("r1", n("a", outputs=("av",)), at=START + 0.1)
    assert [b.ref.node_id for _, b in by_node(c.tick(START + 0.2)).values()] == ["a"]
