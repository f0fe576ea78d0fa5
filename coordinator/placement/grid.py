"""GPU hosts of one shape class indexed by GPU level and free cores together.

On a busy GPU cluster most hosts with a free device have no cores left for it
(that is what fragmentation looks like), so walking one free-capacity axis
visits host after host that cannot take the task. Here each GPU level (whole
free devices, or the largest free share of one device in steps of
``SHARE_STEP``) keeps its hosts sorted by free cores: a bisection per level
finds the hosts that have both, and "nothing fits" costs one bisection per
level rather than a walk over the class.
"""

from __future__ import annotations

from bisect import bisect_left, insort

from coordinator.placement.workers import WorkerState
from shared.capacity import Demand
from shared.resources import MILLI

SHARE_STEP = 50
SEQ_BITS = 32
SEQ_MASK = (1 << SEQ_BITS) - 1
"""An index entry is one int, ``filed(value, seq)``: ints compare faster than tuples, and
``entry & SEQ_MASK`` names the member (worker seqs stay below 2**32)."""


def filed(value: int, seq: int) -> int:
    """The entry of member ``seq`` under ``value``: entries sort by value, then seq."""
    return (value << SEQ_BITS) | seq


GridEntry = int
"""``filed(free milli-cores, worker seq)``."""
GridKey = tuple[int, int, int]
"""(free milli-cores, whole free devices, largest free share of one device)."""


class GpuGrid:
    __slots__ = ("share", "whole")

    def __init__(self, devices: int) -> None:
        self.whole: list[list[GridEntry]] = [[] for _ in range(devices + 1)]
        self.share: list[list[GridEntry]] = [[] for _ in range(MILLI // SHARE_STEP + 1)]

    def add(self, worker: WorkerState, key: GridKey) -> None:
        cpu, whole, share = key
        entry = filed(cpu, worker.seq)
        insort(self.whole[whole], entry)
        insort(self.share[share // SHARE_STEP], entry)

    def move(self, seq: int, was: GridKey, now: GridKey) -> None:
        """Re-file member ``seq`` in the lists its key changed in."""
        (cpu, whole, share), (new_cpu, new_whole, new_share) = was, now
        old, new = (cpu << SEQ_BITS) | seq, (new_cpu << SEQ_BITS) | seq  # filed()
        if cpu != new_cpu or whole != new_whole:
            entries = self.whole[whole]
            del entries[bisect_left(entries, old)]
            insort(self.whole[new_whole], new)
        share, new_share = share // SHARE_STEP, new_share // SHARE_STEP
        if cpu != new_cpu or share != new_share:
            entries = self.share[share]
            del entries[bisect_left(entries, old)]
            insort(self.share[new_share], new)

    def remove(self, worker: WorkerState, key: GridKey) -> None:
        cpu, whole, share = key
        entry = filed(cpu, worker.seq)
        for entries in (self.whole[whole], self.share[share // SHARE_STEP]):
            del entries[bisect_left(entries, entry)]

    def levels(self, demand: Demand) -> list[list[GridEntry]]:
        """The levels that may hold ``demand``, least GPU first; in each, the members from
        the first with ``demand.cpu`` free up fit in cores, fewest cores first. Whole
        devices go by count, a share or no GPU by the largest free share (for CPU-only
        work, hosts whose GPUs are all taken come first)."""
        if demand.gpu_whole:
            return self.whole[demand.gpu_whole :]
        return self.share[demand.gpu_share // SHARE_STEP :]
