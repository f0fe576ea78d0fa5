"""A cancel frees capacity when the agent has stopped the work, not before.

The cancel reaches the agent some time after the decision, and the attempt ends some time
after that. Until the agent reports it ended (its outcome, a heartbeat that no longer lists
it, or the worker gone), its reservation is held, so the next node is not sent to an agent
still full, where it would be rejected for capacity (toward ``max_rejects``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.wire.protocol import Assignment
from tests.unit.test_scheduler import Cluster, n, only

Report = Callable[[Cluster, Assignment, float], None]


def by_outcome(c: Cluster, a: Assignment, at: float) -> None:
    c.cancelled(a, "w1", at)


def by_heartbeat(c: Cluster, a: Assignment, at: float) -> None:
    c.beat("w1", at)


def by_late_success(c: Cluster, a: Assignment, at: float) -> None:
    c.succeed(a, "w1", at)


def by_reject(c: Cluster, a: Assignment, at: float) -> None:
    c.reject(a, "w1", at)  # it reached a full agent after all: never ran


def by_cancel(c: Cluster, at: float) -> None:
    assert c.sched.cancel_run("r1", "user asked", at)


def by_timeout(c: Cluster, at: float) -> None:
    c.tick(at)  # r1 times out (timeout=5 from 0)


def full_worker_with_a_waiting_node(accept: bool = True) -> tuple[Cluster, Assignment]:
    """w1 (2 cpu) runs r1's node; r2's node, as big, waits for it."""
    c = Cluster(max_rejects=1)
    c.register("w1", cpu=2)
    c.submit("r1", n("a", cpu=2), timeout=5)
    _, a = only(c.tick(0))
    if accept:
        c.sched.accepted(a.ref, 0.1)
    c.submit("r2", n("b", cpu=2), at=1)
    assert c.tick(1).assign == {}
    return c, a


@pytest.mark.parametrize("cancel", [by_cancel, by_timeout])
@pytest.mark.parametrize("report", [by_outcome, by_heartbeat, by_late_success])
def test_capacity_is_offered_only_once_the_agent_reports_the_attempt_ended(
    cancel: Callable[[Cluster, float], None], report: Report
) -> None:
    c, a = full_worker_with_a_waiting_node()
    cancel(c, 5)
    d = c.tick(5)
    assert d.assign == {}, "w1 still runs the cancelled attempt"
    assert c.view("r1").node("a").status == "cancelled"
    assert {p.key for p in c.pool.reservations("w1")} == {a.ref}
    c.beat("w1", 5.5, running=[a.ref])
    assert c.tick(6).assign == {}, "still listed: still running"
    c.sched.validate_state()
    report(c, a, 7)
    c.sched.validate_state()
    w, b = only(c.tick(7))
    assert (w, b.ref.node_id) == ("w1", "b")
    c.sched.accepted(b.ref, 7.1)
    state = c.sched.runs["r2"].nodes["b"]
    assert (state.status, state.rejects) == ("running", 0)
    c.succeed(b, "w1", 8)
    assert c.view("r2").status == "succeeded"
    assert c.reserved_keys() == set()


def test_a_reject_of_the_cancelled_assignment_frees_its_capacity() -> None:
    c, a = full_worker_with_a_waiting_node(accept=False)
    by_cancel(c, 2)
    assert c.tick(2).assign == {}
    by_reject(c, a, 3)
    _, b = only(c.tick(3))
    assert b.ref.node_id == "b"
    assert c.sched.runs["r2"].nodes["b"].rejects == 0


def test_a_heartbeat_without_an_attempt_never_received_frees_it_only_after_the_grace() -> None:
    """Not accepted nor listed yet: a heartbeat without it may just precede its arrival;
    absent past the lost-in-transit grace (two intervals), it never arrived."""
    c = Cluster(max_rejects=1)
    c.register("w1", cpu=2, interval=1.0)
    c.submit("r1", n("a", cpu=2))
    only(c.tick(0))
    c.submit("r2", n("b", cpu=2), at=0.5)
    by_cancel(c, 0.5)
    c.beat("w1", 1)
    assert c.tick(1).assign == {}, "it may still arrive"
    c.beat("w1", 2.5)
    _, b = only(c.tick(2.5))
    assert b.ref.node_id == "b"


def test_the_worker_lost_frees_the_cancelled_attempts_reservation() -> None:
    c, a = full_worker_with_a_waiting_node()
    by_cancel(c, 2)
    assert c.reserved_keys() == {a.ref}
    c.sched.worker_left("w1", "deregistered", 3)
    assert c.reserved_keys() == set()
    c.sched.validate_state()
    c.register("w1", 4, cpu=2, started_at=4)
    _, b = only(c.tick(4))
    assert b.ref.node_id == "b"
