"""How much of a GPU host's free capacity a placement makes unusable for the learned mix.

FGD (Weng et al., USENIX ATC '23) measures a node's fragmentation for one task
shape as the free GPU that shape cannot use there: all of it when the shape
cannot run (other model, too few cores, too few devices with room), else the
free share on devices too small for it; a node's fragmentation is the average
over the mix, and a task goes where it grows least. That sees a device that is
too small, but not a node whose cores run out after one task while six GPUs
stay free. So the measure here adds a second term per shape, what remains
unusable after the node is *filled* with that shape::

    frag(n) = sum over shapes m of  p_m * [ (G - k_m * use_m) + LAMBDA * fgd_m ]

``G`` is the node's free GPU (milli), ``k_m`` how many tasks of shape ``m``
fit at once (bounded by free cores, free RAM and devices with room), ``use_m``
the GPU one such task takes, ``fgd_m`` FGD's term. GPUs stranded because the
CPU or RAM they need is gone count, and so a CPU-only task lands where it
strands least: a host whose GPUs are already taken, or one rich in cores.

Per shape class and table the shapes are sorted out once (``ClassTable``):
those that can never run on the class cost a constant per free GPU; the rest
are "terms", grouped by the device share they need ("levels"). Per worker
state the level counts and ``frag`` are computed once and kept until the
worker changes; scoring a placement then updates the counts of the devices it
takes and sums the terms again.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from coordinator.placement.mix import MixTable
from coordinator.placement.policies import Scale, leftover
from coordinator.placement.workers import WorkerState
from shared.capacity import Capacity, Demand, DevicePick
from shared.resources import MILLI

LAMBDA = 1.5
"""Weight of FGD's own term beside the fill term. On the openb replay (seeds 42-51) 1.5
placed 0.05-0.1 point more than 0.75, 1.25 or 2; in an exhaustive simulation both terms
together placed about 0.15 point more than either alone."""

Level = tuple[int, tuple[int, ...] | None]
"""(milli-share one task takes from a device, the device slots it may use; None: all)."""
Term = tuple[float, float, int, int, int]
"""(weight * LAMBDA, weight * GPU per task, cpu, ram, devices per task)."""
Stats = tuple[tuple[int, int], ...]
"""Per level: (tasks the devices could take, free share on devices too small)."""
MEMO_LIMIT = 65536
"""``frag`` values kept per class table before the memo starts over."""


@dataclass(frozen=True, slots=True)
class ClassTable:
    version: int
    base: float
    """Weight of each free milli-GPU before the terms: shapes that never run here, and all."""
    levels: tuple[Level, ...]
    terms: tuple[tuple[Term, ...], ...]
    """The terms of each level."""
    uniform: bool = True
    """Whether every level may use every device (no model or memory sets them apart)."""
    memo: dict[tuple[int, int, int, Stats], float] = field(default_factory=dict)
    """``frag`` per state: hosts of a class pass through the same states again and again."""


def class_table(cap: Capacity, table: MixTable) -> ClassTable:
    """The mix as one class sees it: which shapes could ever run there, and on which devices."""
    base = 0.0
    levels: dict[Level, list[Term]] = {}
    every = tuple(range(len(cap.gpu_models)))
    for shape, p in table.shapes:
        cpu, ram, whole, share, models, mem = shape
        slots = tuple(
            s
            for s, (model, size) in enumerate(zip(cap.gpu_models, cap.gpu_mem, strict=True))
            if (not models or model in models) and size >= mem
        )
        count = whole or 1
        base += p
        if cpu > cap.cpu or ram > cap.ram or len(slots) < count:
            base += LAMBDA * p
            continue
        unit = share or MILLI
        level = (unit, None if slots == every else slots)
        levels.setdefault(level, []).append((LAMBDA * p, p * unit * count, cpu, ram, count))
    uniform = all(slots is None for _, slots in levels)
    terms = tuple(map(tuple, levels.values()))
    return ClassTable(table.version, base, tuple(levels), terms, uniform)


def level_stats(free: list[int], levels: tuple[Level, ...]) -> Stats:
    some = [f for f in free if f]
    out: list[tuple[int, int]] = []
    for unit, slots in levels:
        units = small = 0
        for f in some if slots is None else [free[s] for s in slots]:
            units += f // unit
            if f < unit:
                small += f
        out.append((units, small))
    return tuple(out)


def frag_of(gpu: int, cpu: int, ram: int, stats: Stats, ct: ClassTable) -> float:
    """``frag``, remembered per class table."""
    key = (gpu, cpu, ram, stats)
    value = ct.memo.get(key)
    if value is None:
        if len(ct.memo) >= MEMO_LIMIT:
            ct.memo.clear()
        value = ct.memo[key] = frag(gpu, cpu, ram, stats, ct)
    return value


def frag(gpu: int, cpu: int, ram: int, stats: Stats, ct: ClassTable) -> float:
    """The measure in the module's docstring, for one worker state."""
    total = gpu * ct.base
    for (units, small), terms in zip(stats, ct.terms, strict=True):
        for w_lambda, w_use, t_cpu, t_ram, count in terms:
            k = units // count
            if t_cpu * k > cpu:
                k = cpu // t_cpu
            if t_ram * k > ram:
                k = ram // t_ram
            total += w_lambda * (small if k else gpu) - k * w_use
    return total


Option = tuple[float, float, DevicePick]
"""(growth of ``frag``, ``leftover`` after placement, devices taken)."""


@dataclass(slots=True)
class WorkerScores:
    """What scoring found for one state of one worker (``WorkerState.scores``)."""

    stamp: int
    table: ClassTable
    scale: Scale
    options: dict[Hashable, list[Option]]
    before: tuple[float, Stats] | None = None


def _scores(w: WorkerState, ct: ClassTable, scale: Scale) -> WorkerScores:
    cached = w.scores
    if (
        isinstance(cached, WorkerScores)
        and cached.stamp == w.stamp
        and cached.table is ct
        and cached.scale == scale
    ):
        return cached
    w.scores = fresh = WorkerScores(w.stamp, ct, scale, {})
    return fresh


def _before(w: WorkerState, scores: WorkerScores, ct: ClassTable) -> tuple[float, Stats]:
    if scores.before is None:
        stats = level_stats(w.free_dev, ct.levels)
        scores.before = (frag_of(sum(w.free_dev), w.free_cpu, w.usable_ram(), stats, ct), stats)
    return scores.before


def _moved(stats: Stats, ct: ClassTable, slot: int, old: int, new: int) -> Stats:
    """Level counts once device ``slot`` goes from ``old`` to ``new`` free."""
    return tuple(
        (
            units + new // unit - old // unit,
            small + (new if new < unit else 0) - (old if old < unit else 0),
        )
        if slots is None or slot in slots
        else (units, small)
        for (units, small), (unit, slots) in zip(stats, ct.levels, strict=True)
    )


def _emptied(stats: Stats, ct: ClassTable, taken: DevicePick) -> Stats:
    """Level counts once the whole free devices ``taken`` are taken."""
    if ct.uniform:
        n = len(taken)
        return tuple(
            (units - n * (MILLI // unit), small)
            for (units, small), (unit, _) in zip(stats, ct.levels, strict=True)
        )
    out = stats
    for slot, _ in taken:
        out = _moved(out, ct, slot, MILLI, 0)
    return out


def options(w: WorkerState, d: Demand, ct: ClassTable, scale: Scale, key: Hashable) -> list[Option]:
    """How much ``frag`` grows if ``w`` takes ``d`` now, per choice of devices: for a
    share, each distinct free amount of a device that can hold it; else what ``fit``
    takes. Empty if ``w`` cannot take ``d`` now. Kept per request ``key`` until the
    worker changes."""
    scores = _scores(w, ct, scale)
    found = scores.options.get(key)
    if found is None:
        pick = w.fit(d)
        found = []
        if pick is not None:
            now, stats = _before(w, scores, ct)
            found = [
                (grown, leftover(w, d, devices, scale), devices)
                for grown, devices in _growth(w, d, pick, ct, now, stats)
            ]
        scores.options[key] = found
    return found


def _growth(
    w: WorkerState, d: Demand, pick: DevicePick, ct: ClassTable, now: float, stats: Stats
) -> list[tuple[float, DevicePick]]:
    cpu, ram, gpu = w.free_cpu - d.cpu, w.usable_ram() - d.ram, sum(w.free_dev)
    if d.gpu_share:
        out: list[tuple[float, DevicePick]] = []
        seen: set[tuple[int, int]] = set()
        for slot, free in enumerate(w.free_dev):
            # devices alike score alike; with per-device eligibility, each device is its own
            alike = (free, -1 if ct.uniform else slot)
            if free >= d.gpu_share and alike not in seen and w.cap.device_ok(slot, d):
                seen.add(alike)
                after = _moved(stats, ct, slot, free, free - d.gpu_share)
                grown = frag_of(gpu - d.gpu_share, cpu, ram, after, ct) - now
                out.append((grown, ((slot, d.gpu_share),)))
        return out
    return [(frag_of(gpu - MILLI * len(pick), cpu, ram, _emptied(stats, ct, pick), ct) - now, pick)]
