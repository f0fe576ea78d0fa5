"""Workers are lost only on silence the coordinator was awake to hear, and work that a
worker lost moments ago could hold waits for it (coordinator/scheduling/liveness.py).

The scheduler is driven as the service drives it: a tick every 0.1 s (``tick=0.1`` in its
config), agents beating once a second, three missed beats to be lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest

from coordinator.scheduling.liveness import BACKLOG_CREDIT, BACKLOG_REFILL, backlog_credit
from tests.unit.test_scheduler import Cluster, lost, n, only

TICK = 0.1


def live(**config: object) -> Cluster:
    return Cluster(tick=TICK, **config)


def ticks(
    c: Cluster, start: float, end: float, *, beating: Iterable[str] = (), every: float = 1.0
) -> list[tuple[float, str]]:
    """Tick from ``start`` to ``end`` (inclusive), the ``beating`` workers beating every
    ``every`` seconds; the workers reported lost, with when."""
    found: list[tuple[float, str]] = []
    names = tuple(beating)
    steps = round((end - start) / TICK)
    per_beat = round(every / TICK)
    for i in range(steps + 1):
        at = round(start + i * TICK, 6)
        if i % per_beat == 0:
            for name in names:
                if name in c.sched.workers:
                    c.beat(name, at)
        found += [(at, name) for name in lost(c.tick(at))]
    return found


# -- a paused coordinator ----------------------------------------------------------------------


def test_a_pause_between_ticks_does_not_lose_workers_that_beat_right_after() -> None:
    c = live()
    c.register("w1", interval=1)
    c.register("w2", interval=1)
    assert ticks(c, 0, 2, beating=("w1", "w2")) == []
    c.submit("r1", n("a"), at=2.05)  # submitted just before the process is stopped
    # SIGSTOP at 2.05 for 8 s: the first tick after SIGCONT comes before the beats that
    # queued meanwhile are read.
    d = c.tick(10.1)
    assert lost(d) == []
    assert set(c.sched.workers) == {"w1", "w2"}
    w, a = only(d)
    c.sched.accepted(a.ref, 10.12)
    c.beat("w1", 10.15)
    c.beat("w2", 10.15)
    assert ticks(c, 10.2, 14, beating=("w1", "w2")) == []
    c.succeed(a, w, 14.05)
    assert c.view("r1").status == "succeeded"
    assert c.node("r1", "a").system_retries == 0


def test_a_beat_sent_during_a_pause_does_not_call_an_assignment_lost_in_transit() -> None:
    c = live()
    c.register("w1", interval=1)
    c.submit("r1", n("a"))
    w, a = only(c.tick(0))
    # Stopped right after placing; the agent beat (without the attempt: the assignment
    # was still in the coordinator's send buffer) and that beat is the first thing read.
    c.beat(w, 10.0)
    assert c.tick(10.0).assign == {}
    node = c.node("r1", "a")
    assert (node.status, node.attempt, node.system_retries) == ("placed", 1, 0)
    c.beat(w, 10.5, running=(a.ref,))
    assert c.node("r1", "a").status == "running"


def test_a_cancelled_assignment_sent_before_a_pause_keeps_its_reservation_after_it() -> None:
    """Its grace to arrive counts heard time only, as the grace of any assignment does: a
    beat read right after the pause, without it, may still precede its arrival, so its
    cpu is not given to the node waiting for it."""
    c = live(max_rejects=1)
    c.register("w1", cpu=2, interval=1)
    c.submit("r1", n("a", cpu=2))
    only(c.tick(0))
    c.submit("r2", n("b", cpu=2), at=0.02)
    assert c.sched.cancel_run("r1", "user asked", 0.05)
    # Stopped from 0.1 to 10: the first tick after it, then a beat that queued meanwhile.
    assert c.tick(10.0).assign == {}
    c.beat("w1", 10.05)
    assert c.tick(10.1).assign == {}, "the cancelled assignment may still arrive"
    placed = []
    for i in range(1, 30):
        at = round(10.1 + i * TICK, 6)
        if i % 10 == 0:
            c.beat("w1", at)
        placed += [(at, a.ref.node_id) for a in c.tick(at).assign.get("w1", ())]
    assert placed == [(12.1, "b")]


def test_a_worker_silent_before_and_after_a_pause_is_lost_after_its_awake_silence() -> None:
    c = live()
    c.register("w1", interval=1)
    c.register("silent", interval=1)
    assert ticks(c, 0, 1, beating=("w1",)) == []  # awake and silent for 1 s
    assert lost(c.tick(9.0)) == []  # an 8 s pause is not silence
    found = ticks(c, 9.1, 14, beating=("w1",))
    assert [name for _, name in found] == ["silent"]
    at = found[0][0]
    assert 11.0 <= at <= 11.3, f"lost at {at}: 3 s awake silence is 1 s before and 2 s after"


def test_a_worker_silent_for_its_misses_while_awake_is_still_lost() -> None:
    c = live()
    c.register("w1", interval=1)
    c.register("silent", interval=1)
    found = ticks(c, 0, 5, beating=("w1",))
    assert [name for _, name in found] == ["silent"]
    assert 3.0 < found[0][0] <= 3.2
    assert set(c.sched.workers) == {"w1"}


# -- a lost connection to NATS -----------------------------------------------------------------


def test_a_disconnection_does_not_lose_workers_and_they_get_a_grace_after_it() -> None:
    c = live()
    c.register("w1", interval=1)
    c.register("w2", interval=1)
    assert ticks(c, 0, 1, beating=("w1", "w2")) == []
    c.sched.suspended(1.05)
    c.submit("r1", n("a"), at=2.0)
    assert ticks(c, 1.1, 20) == [], "nothing is heard while disconnected: nothing is lost"
    assert c.view("r1").status == "running"
    c.sched.resumed(20.0)
    # Agents reconnect on their own schedule: w1 is back at once, w2 two seconds later.
    found = ticks(c, 20.1, 22.5, beating=("w1",))
    assert found == []
    assert c.node("r1", "a").status == "placed"
    assert ticks(c, 22.6, 30, beating=("w1", "w2")) == []
    assert set(c.sched.workers) == {"w1", "w2"}


def test_a_worker_that_never_comes_back_after_a_reconnect_is_lost_after_its_grace() -> None:
    c = live()
    c.register("w1", interval=1)
    c.register("gone", interval=1)
    assert ticks(c, 0, 1, beating=("w1", "gone")) == []
    c.sched.suspended(1.05)
    assert ticks(c, 1.1, 5) == []
    c.sched.resumed(5.0)
    found = ticks(c, 5.1, 12, beating=("w1",))
    assert [name for _, name in found] == ["gone"]
    assert 8.0 < found[0][0] <= 8.2, "three intervals after the reconnect"


def test_resuming_a_connection_that_never_dropped_changes_nothing() -> None:
    c = live()
    c.register("silent", interval=1)
    assert ticks(c, 0, 2) == []
    c.sched.resumed(2.05)
    found = ticks(c, 2.1, 4)
    assert [name for _, name in found] == ["silent"]
    assert 3.0 < found[0][0] <= 3.2


# -- work a lost worker could hold -------------------------------------------------------------


def test_work_whose_only_able_worker_was_just_lost_waits_and_runs_when_it_returns() -> None:
    c = live()
    c.register("gpu", gpus=1, interval=1)
    c.register("cpu", interval=1)
    c.submit("r1", n("train", gpus=1))
    w, _ = only(c.tick(0))
    assert w == "gpu"
    found = ticks(c, 0.1, 5, beating=("cpu",))
    assert [name for _, name in found] == ["gpu"]
    c.submit("r2", n("embed", gpus=1), at=5.05)  # submitted while the GPU host is gone
    assert ticks(c, 5.1, 20, beating=("cpu",)) == []
    for run_id, node in (("r1", "train"), ("r2", "embed")):
        assert c.view(run_id).status == "running"
        assert c.node(run_id, node).reason.startswith("infeasible: ")
    c.register("gpu", at=20, gpus=2, interval=1, started_at=2.0)  # the host restarted
    placed = c.tick(20.1).assign
    assert {a.ref.node_id for a in placed["gpu"]} == {"train", "embed"}
    assert c.view("r1").status == c.view("r2").status == "running"


def test_work_a_lost_worker_could_hold_fails_when_the_return_grace_ends() -> None:
    c = live(lost_worker_grace=10)
    c.register("gpu", gpus=1, interval=1)
    c.register("cpu", interval=1)
    ticks(c, 0, 1, beating=("gpu", "cpu"))
    found = ticks(c, 1.1, 5, beating=("cpu",))
    assert [name for _, name in found] == ["gpu"]
    at = found[0][0]
    c.submit("r1", n("train", gpus=1), at=at)
    assert c.view("r1").status == "running"
    ticks(c, round(at + 0.1, 6), round(at + 9.8, 6), beating=("cpu",))
    assert c.view("r1").status == "running"
    ticks(c, round(at + 9.9, 6), round(at + 10.2, 6), beating=("cpu",))
    view = c.view("r1")
    assert view.status == "failed"
    assert view.error.startswith("infeasible: train: ")


def test_work_no_worker_ever_could_hold_fails_at_once_even_after_a_loss() -> None:
    c = live()
    c.register("small", cpu=2, interval=1)
    c.register("cpu", cpu=4, interval=1)
    found = ticks(c, 0, 4, beating=("cpu",))
    assert [name for _, name in found] == ["small"]
    c.submit("r1", n("gpu_job", gpus=1), at=4.05)
    assert c.view("r1").status == "failed"
    assert c.view("r1").error.startswith("infeasible: gpu_job: ")
    c.submit("r2", n("huge", cpu=64), at=4.05)
    assert c.view("r2").status == "failed"


# -- a backlogged inbound side -----------------------------------------------------------------


def behind_ticks(
    c: Cluster, start: float, end: float, *, behind: Callable[[float], bool] = lambda _: True
) -> list[tuple[float, str]]:
    """Tick from ``start`` to ``end`` with the service saying, before each tick, whether
    agents' messages wait unread (``behind(at)``); nothing is heard. The workers lost."""
    found: list[tuple[float, str]] = []
    for i in range(round((end - start) / TICK) + 1):
        at = round(start + i * TICK, 6)
        c.sched.inbound(behind(at))
        found += [(at, name) for name in lost(c.tick(at))]
    return found


def test_heartbeats_stuck_behind_a_backlog_do_not_lose_their_worker() -> None:
    c = live()
    c.register("w1", interval=1)
    assert ticks(c, 0, 1, beating=("w1",)) == []
    # A flood from 1.05 to 5: w1's beats wait unread behind junk in the inbound queue.
    assert behind_ticks(c, 1.1, 5.0) == []
    c.sched.inbound(False)
    c.beat("w1", 5.05)  # the queued beats are read as the backlog clears
    assert ticks(c, 5.1, 9, beating=("w1",)) == []
    assert set(c.sched.workers) == {"w1"}


def test_a_worker_silent_around_a_backlog_is_lost_after_its_caught_up_silence() -> None:
    c = live()
    c.register("w1", interval=1)
    c.register("silent", interval=1)
    assert ticks(c, 0, 1, beating=("w1",)) == []  # awake, caught up, silent for 1 s
    assert behind_ticks(c, 1.1, 5.0) == []
    c.sched.inbound(False)
    found = ticks(c, 5.1, 10, beating=("w1",))
    assert [name for _, name in found] == ["silent"]
    at = found[0][0]
    assert 7.0 <= at <= 7.4, f"lost at {at}: 3 s caught-up silence is 1 s before and 2 s after"


def test_a_backlog_that_never_clears_delays_loss_by_the_credit_at_most() -> None:
    c = live()
    c.register("w1", interval=1)
    c.register("silent", interval=1)
    assert ticks(c, 0, 0.5, beating=("w1",)) == []

    def beating_behind(at: float) -> bool:
        if round(at * 10) % 10 == 0:
            c.beat("w1", at)  # w1 gets through now and then; the backlog stays
        return True

    found = behind_ticks(c, 0.6, 20, behind=beating_behind)
    assert [name for _, name in found] == ["silent"]
    at = found[0][0]
    assert 3.0 + BACKLOG_CREDIT - 0.6 <= at <= 3.0 + BACKLOG_CREDIT + 0.3, f"lost at {at}"
    assert set(c.sched.workers) == {"w1"}


def test_a_backlog_that_comes_and_goes_cannot_put_off_loss_for_ever() -> None:
    c = live()
    c.register("silent", interval=1)
    found = behind_ticks(c, 0, 60, behind=lambda at: round(at * 10) % 2 == 0)
    assert [name for _, name in found] == ["silent"]
    bound = (1 + BACKLOG_REFILL) * 3.0 + BACKLOG_CREDIT
    assert found[0][0] <= bound + 0.2, f"lost at {found[0][0]}, bound {bound:g} s"


def test_a_disconnection_during_a_backlog_is_not_counted_twice() -> None:
    c = live()
    c.register("silent", interval=1)
    assert behind_ticks(c, 0, 1) == []
    c.sched.suspended(1.05)
    assert behind_ticks(c, 1.1, 4) == []
    c.sched.resumed(4.0)
    c.sched.inbound(False)
    found = ticks(c, 4.1, 20)
    assert [name for _, name in found] == ["silent"]
    # 1 s backlogged (uncounted), 3 s down, then the reconnect grace of 3 intervals.
    assert 7.0 < found[0][0] <= 7.3


def test_backlog_credit_is_spent_while_behind_and_regained_while_caught_up() -> None:
    assert backlog_credit(BACKLOG_CREDIT, 0.5, True) == (BACKLOG_CREDIT - 0.5, 0.5)
    assert backlog_credit(0.2, 0.5, True) == (0.0, 0.2)
    assert backlog_credit(0.0, 0.5, True) == (0.0, 0.0)
    left, uncounted = backlog_credit(0.0, 10.0, False)
    assert uncounted == 0.0
    assert left == pytest.approx(10.0 * BACKLOG_REFILL)
    assert backlog_credit(BACKLOG_CREDIT, 1_000.0, False) == (BACKLOG_CREDIT, 0.0)


def test_a_backlog_after_a_long_caught_up_stretch_gets_its_full_credit_again() -> None:
    c = live()
    c.register("w1", interval=1)
    c.register("silent", interval=1)

    def w1_gets_through(at: float) -> bool:
        c.beat("w1", at)
        return True

    behind_ticks(c, 0, 20, behind=w1_gets_through)  # the credit is spent
    assert "silent" not in c.sched.workers
    c.sched.inbound(False)
    c.register("silent", at=20.05, interval=1, started_at=2.0)
    refilled = round(20.1 + BACKLOG_CREDIT / BACKLOG_REFILL, 1)
    assert ticks(c, 20.1, refilled, beating=("w1", "silent")) == []
    found = behind_ticks(c, refilled + 0.1, refilled + 20, behind=w1_gets_through)
    assert [name for _, name in found] == ["silent"]
    assert found[0][0] - refilled >= 3.0 + BACKLOG_CREDIT - 0.3
