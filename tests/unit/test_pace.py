"""A large fleet is told to beat less often (``Pace``), and judged by the pace it was told
(coordinator/scheduling/liveness.py: ``Pacer``; the scheduler's ``pace`` decisions)."""

from __future__ import annotations

import pytest

from coordinator.scheduling.liveness import MIN_PACE, Pacer, pace_level
from tests.unit.test_scheduler import Cluster, lost


@pytest.mark.parametrize(
    ("needed", "level"),
    [(0.0, 0.0), (0.49, 0.0), (0.5, 0.5), (0.51, 1.0), (1.0, 1.0), (3.0, 4.0), (10.0, 16.0)],
)
def test_the_pace_is_the_least_power_of_two_times_the_minimum_that_is_enough(
    needed: float, level: float
) -> None:
    assert pace_level(needed) == level


def test_the_pace_rises_at_once_and_falls_only_once_the_fleet_fits_a_quarter_of_it() -> None:
    pacer = Pacer(max_rate=100)
    assert (pacer.resize(10), pacer.interval) == (False, 0.0)
    assert (pacer.resize(1000), pacer.interval) == (True, 16.0)  # 10 s needed
    assert (pacer.resize(900), pacer.interval) == (False, 16.0)
    assert (pacer.resize(500), pacer.interval) == (False, 16.0)  # 5 s needed: 8 > a quarter
    assert (pacer.resize(400), pacer.interval) == (True, 4.0)
    assert (pacer.resize(10), pacer.interval) == (True, 0.0)


def test_no_bound_means_no_pace() -> None:
    pacer = Pacer(max_rate=0)
    assert (pacer.resize(1_000_000), pacer.interval) == (False, 0.0)


def test_a_growing_fleet_tells_every_worker_when_the_pace_changes_and_a_joiner_alone_else() -> None:
    c = Cluster(max_heartbeats=2)  # 2 beats a second: 2 workers need 1 s apart
    c.register("w1")
    assert (c.sched.take().pace, c.sched.pace) == (["w1"], MIN_PACE)  # 0.5 s needed
    c.register("w2")
    first = c.sched.take()
    assert (first.pace, c.sched.pace) == (["w1", "w2"], 1.0)
    c.register("w3")  # 1.5 s needed: 2 s
    assert (sorted(c.sched.take().pace), c.sched.pace) == (["w1", "w2", "w3"], 2.0)
    c.register("w4")  # 2 s needed: the same pace, told to the one who joined
    assert (c.sched.take().pace, c.sched.pace) == (["w4"], 2.0)


def test_a_worker_told_a_longer_pace_is_lost_only_after_missing_its_beats() -> None:
    """Its last beat said 1 s; the pace says 8 s: it next beats up to 8 s later."""
    c = Cluster(max_heartbeats=0.5)  # 4 workers: 8 s needed, so 8 s
    for name in ("w1", "w2", "w3", "w4"):
        c.register(name, interval=1.0)
    assert c.sched.pace == 8.0
    assert lost(c.tick(10.0)) == []  # 10 > 3 x 1 s, < 3 x 8 s
    c.beat("w1", 20.0)
    assert sorted(lost(c.tick(24.5))) == ["w2", "w3", "w4"]  # silent since 0: 3 x 8 s
    assert lost(c.tick(30.0)) == []
    assert lost(c.tick(44.5)) == ["w1"]
