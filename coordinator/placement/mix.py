"""The mix of GPU requests the pool has seen lately: what fragmentation is measured against.

FGD (Weng et al., USENIX ATC '23) scores a placement by how much GPU capacity
it makes unusable *for the tasks that will come*, and takes "the tasks that
will come" from the whole trace, known in advance. A coordinator does not know
its future, so it learns it: every GPU request placed (or found busy) counts
once in a histogram of request shapes whose older counts decay, so the mix
follows the workload as it shifts.

Scoring reads a frozen ``MixTable``, not the live histogram, because every
cached score depends on it. The table is rebuilt only when the learned mix has
moved by more than ``DRIFT`` (half the L1 distance between the two normalised
mixes) since the last build; a steady workload keeps its table and its caches.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from shared.capacity import Demand

HALF_LIFE = 2000
"""GPU requests after which a recorded request weighs half as much."""
CHECK_EVERY = 128
"""GPU requests between two comparisons of the live mix with the table."""
DRIFT = 0.1
"""How far (total variation) the live mix may move before the table is rebuilt."""
COVERAGE = 0.95
"""The table keeps the most frequent shapes until they cover this share of the weight."""
MAX_SHAPES = 24
"""... and never more than this many: scoring costs one step per shape."""
PENDING_LIMIT = 4096

Shape = tuple[int, int, int, int, frozenset[str], int]
"""cpu, ram, whole devices, share of one device, allowed models, device memory."""
Kind = tuple[int, int, int, frozenset[str], int]
"""A shape without its RAM: requests alike but for RAM count as one kind, with their
average RAM, so that the table holds fewer, heavier shapes (scoring costs one step each)."""


def kind_of(d: Demand) -> Kind:
    return (d.cpu, d.gpu_whole, d.gpu_share, d.gpu_models, d.gpu_mem)


@dataclass(frozen=True, slots=True)
class MixTable:
    """A frozen mix: the kept shapes with their weights (summing to 1).

    ``basis`` holds each kept shape's share of the whole mix when it was built,
    to measure how far the live mix has moved since.
    """

    version: int
    shapes: tuple[tuple[Shape, float], ...]
    basis: tuple[tuple[Kind, float], ...] = ()

    def drift(self, live: dict[Kind, float]) -> float:
        """Total variation between ``live`` and the mix this table was built from,
        over the kept shapes and the rest taken as one."""
        moved = sum(abs(live.get(s, 0.0) - p) for s, p in self.basis)
        rest = 1 - sum(p for _, p in self.basis)
        rest_now = 1 - sum(live.get(s, 0.0) for s, _ in self.basis)
        return (moved + abs(rest_now - rest)) / 2


class RequestMix:
    """Decayed counts of GPU request shapes, and the table scoring reads."""

    def __init__(self, half_life: int = HALF_LIFE) -> None:
        self._growth = 0.5 ** (-1 / half_life)
        self._step = 1.0
        self._counts: dict[Kind, list[float]] = {}
        """Per kind, its decayed count and the decayed sum of its RAM (one entry to
        update per request)."""
        self._pending: dict[Hashable, None] = {}
        self._since_check = 0
        self.table = MixTable(0, ())

    def record(self, demand: Demand, key: Hashable, placed: bool) -> None:
        """Count a GPU request once, however often a busy one is tried again under ``key``."""
        if not (demand.gpu_whole or demand.gpu_share):  # demand.wants_gpu, without a call
            return
        pending = self._pending
        if key in pending:
            if placed:
                del pending[key]
            return
        if not placed:
            if len(pending) >= PENDING_LIMIT:
                del pending[next(iter(pending))]
            pending[key] = None
        kind = kind_of(demand)
        step = self._step
        counts = self._counts.get(kind)
        if counts is None:
            counts = self._counts[kind] = [0.0, 0.0]
        counts[0] += step
        counts[1] += step * demand.ram
        self._step = step * self._growth
        if self._step > 1e100:
            self._rescale()
        self._since_check += 1
        if self._since_check >= CHECK_EVERY or not self.table.shapes:
            self._since_check = 0
            self._maybe_rebuild()

    def shares(self) -> dict[Kind, float]:
        """The live mix, normalised."""
        total = sum(c[0] for c in self._counts.values())
        return {k: c[0] / total for k, c in self._counts.items()} if total else {}

    def _shape(self, kind: Kind) -> Shape:
        cpu, whole, share, models, mem = kind
        count, ram = self._counts[kind]
        return (cpu, round(ram / count), whole, share, models, mem)

    def _rescale(self) -> None:
        scale = 1 / self._step
        self._counts = {
            k: [count * scale, ram * scale]
            for k, (count, ram) in self._counts.items()
            if count * scale > 1e-9
        }
        self._step = 1.0

    def _maybe_rebuild(self) -> None:
        live = self.shares()
        if len(live) > 8 * MAX_SHAPES:
            self._prune()
        if self.table.shapes and self.table.drift(live) <= DRIFT:
            return
        kept: list[tuple[Kind, float]] = []
        covered = 0.0
        for kind, share in sorted(live.items(), key=lambda kv: (-kv[1], _order(kv[0]))):
            if covered >= COVERAGE or len(kept) >= MAX_SHAPES:
                break
            kept.append((kind, share))
            covered += share
        shapes = tuple((self._shape(k), p / covered) for k, p in kept)
        self.table = MixTable(self.table.version + 1, shapes, tuple(kept))

    def _prune(self) -> None:
        """Forget kinds that have decayed to nothing, so the histogram stays small."""
        total = sum(c[0] for c in self._counts.values())
        self._counts = {k: c for k, c in self._counts.items() if c[0] >= 1e-4 * total}


def _order(kind: Kind) -> tuple[int, int, int, tuple[str, ...], int]:
    """A total order on kinds, so equal weights never depend on dict order."""
    cpu, whole, share, models, mem = kind
    return (cpu, whole, share, tuple(sorted(models)), mem)
