"""A deep queue's survivors of a full collection are frozen; a forgotten run is freed
without the collector (``coordinator/heap.py``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from coordinator.heap import DEEP_RUNS, YOUNG_EVERY, Freezer
from shared.wire.protocol import Outcome
from tests.unit.test_deep_queue import kiqs, waiting


@pytest.fixture
def collector() -> Iterator[None]:
    """The collector as it was, whatever a test froze or disabled."""
    enabled = gc.isenabled()
    try:
        yield
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()


@pytest.mark.usefixtures("collector")
def test_young_collections_are_rarer_while_the_coordinator_runs_and_as_before_after() -> None:
    """Rarer only while the queue is not deep: there the survivors of every full collection
    are frozen, and rarer young collections made each full one walk ten times as many."""
    before = gc.get_threshold()
    with Freezer() as freezer:
        assert gc.get_threshold() == (YOUNG_EVERY, *before[1:])
        freezer.settle(DEEP_RUNS)
        assert gc.get_threshold() == before
        freezer.settle(DEEP_RUNS - 1)
        assert gc.get_threshold() == (YOUNG_EVERY, *before[1:])
    assert gc.get_threshold() == before


@pytest.mark.usefixtures("collector")
def test_what_survives_a_full_collection_is_frozen_only_while_the_queue_is_deep() -> None:
    with Freezer() as freezer:
        gc.collect()
        freezer.settle(DEEP_RUNS - 1)
        assert gc.get_freeze_count() == 0
        gc.collect()
        freezer.settle(DEEP_RUNS)
        assert gc.get_freeze_count() > 0
        freezer.settle(DEEP_RUNS)  # no full collection since: nothing more to freeze
        assert freezer.frozen == 1
        freezer.settle(0)  # the queue drained: the collector walks everything again
        assert gc.get_freeze_count() == 0


@pytest.mark.usefixtures("collector")
def test_a_forgotten_run_leaves_no_garbage_cycle() -> None:
    """Frozen, a run and its nodes (which refer to each other) would never be freed."""
    sched = waiting()
    for submit in kiqs(3):
        sched.submit(submit, 1.0)
    sched.tick(6.0)
    for a in sched.take().assign["w1"]:
        outcome = Outcome(
            ref=a.ref, worker="w1", status="succeeded", started_at=6.0, finished_at=6.0
        )
        sched.outcome(outcome, 6.0)
    sched.tick(6.0)
    finished = sched.take().finished
    assert len(finished) == 3
    gc.collect()
    gc.disable()
    for run_id in finished:
        sched.forget(run_id)
    assert gc.collect() == 0
