"""What the coordinator counts as it works, for Prometheus (``metrics_export.py``).

Most figures are states the scheduler holds anyway (the queue, reservations, workers, runs
in memory) and are read only when Prometheus scrapes; the pool counts its own placements
and answers (``ResourceAwareWorkerPool.placed`` / ``answers``). What happens and leaves no
trace in the state (how long a pump pass took, how each run and node ended, how many
system retries a run needed) is counted here by one call per pass, ``after_pass``: a
bisection and a few additions, plus a look at the nodes of the runs that ended in it.
Plain numbers, no library: the service calls it whether or not anyone scrapes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared.metrics import Buckets

if TYPE_CHECKING:
    from coordinator.scheduling.machine import Decisions, Scheduler

PASS_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
"""Seconds of one pump pass: applying what arrived, scheduling, sending."""


@dataclass
class PassCounts:
    """Totals since this process started, across its terms as leader."""

    passes: Buckets = field(default_factory=lambda: Buckets(PASS_BOUNDS))
    runs: Counter[str] = field(default_factory=Counter)
    """Runs ended, by final status."""
    nodes: Counter[str] = field(default_factory=Counter)
    """Nodes of the runs ended, by final status."""
    system_retries: int = 0
    """Re-placements after a lost worker, of the nodes of the runs ended."""


COUNTS = PassCounts()


def after_pass(
    scheduler: Scheduler, decisions: Decisions, seconds: float, counts: PassCounts = COUNTS
) -> None:
    """Count one pump pass: call it right after ``scheduler.take()``, while the runs that
    ended in the pass are still in memory."""
    counts.passes.observe(seconds)
    for run_id in decisions.finished:
        run = scheduler.runs.get(run_id)
        if run is None:
            continue
        counts.runs[run.status] += 1
        for node in run.nodes.values():
            counts.nodes[node.status] += 1
            counts.system_retries += node.system_retries
