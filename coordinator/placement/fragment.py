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
are "terms", grouped by the device share they need ("levels"). A host's
devices are interned as a *state* of the table: their free amounts, in any
order when every level may use every device, with the level counts. The table
keeps what a placement turns one state into, and ``frag`` per state, free
cores and free RAM: hosts of one class pass through the same states again and
again, so scoring a placement is mostly a few lookups by small integers.
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
Flat = tuple[float, float, int, int, int]
"""A term as ``frag`` walks them: (weight * LAMBDA, weight * GPU per task, cpu, ram, level)."""
Stats = tuple[tuple[int, int], ...]
"""Per level: (tasks the devices could take, free share on devices too small)."""
Devices = tuple[int, ...]
"""Free milli-share of each device: in slot order, or sorted when the table is uniform."""
MEMO_LIMIT = 65536
"""``frag`` values (and moves between states) kept per class table before starting over."""
STATE_LIMIT = 16384
"""Device states interned per class table before the table is built afresh."""


@dataclass(slots=True, eq=False)
class ClassTable:
    version: int
    base: float
    """Weight of each free milli-GPU before the terms: shapes that never run here, and all."""
    levels: tuple[Level, ...]
    terms: tuple[tuple[Term, ...], ...]
    """The terms of each level."""
    flat: tuple[Flat, ...]
    """Every term, level by level."""
    uniform: bool = True
    """Whether every level may use every device (no model or memory sets them apart)."""
    states: dict[Devices, int] = field(default_factory=dict)
    """Each device state seen, by its id: the index of its ``devices``, ``stats``, ``gpu``
    (free milli-GPU) and ``tasks`` (per term, how many tasks the devices alone could take)."""
    devices: list[Devices] = field(default_factory=list)
    stats: list[Stats] = field(default_factory=list)
    gpu: list[int] = field(default_factory=list)
    tasks: list[tuple[int, ...]] = field(default_factory=list)
    moves: dict[tuple[int, int, int, int], int] = field(default_factory=dict)
    """(state, free before, free after, devices) -> the state once that many devices with
    the first free amount have the second (uniform tables, where order does not count)."""
    memo: dict[tuple[int, int, int], float] = field(default_factory=dict)
    """``frag`` per (free cores, free RAM, state)."""

    def state(self, devices: Devices) -> int:
        """The id of a device state, interned on first sight."""
        sid = self.states.get(devices)
        if sid is None:
            sid = self.states[devices] = len(self.devices)
            stats = level_stats(devices, self.levels)
            self.devices.append(devices)
            self.stats.append(stats)
            self.gpu.append(sum(devices))
            self.tasks.append(
                tuple(
                    stats[level][0] // term[4]
                    for level, terms in enumerate(self.terms)
                    for term in terms
                )
            )
        return sid

    def moved(self, sid: int, old: int, new: int, count: int) -> int:
        """The state once ``count`` devices with ``old`` free have ``new`` (uniform tables)."""
        key = (sid, old, new, count)
        after = self.moves.get(key)
        if after is None:
            if len(self.moves) >= MEMO_LIMIT:
                self.moves.clear()
            devices = list(self.devices[sid])
            for _ in range(count):
                devices[devices.index(old)] = new
            devices.sort()
            after = self.moves[key] = self.state(tuple(devices))
        return after

    def frag(self, cpu: int, ram: int, sid: int) -> float:
        """``frag`` of a host in state ``sid`` with ``cpu`` and ``ram`` free, remembered."""
        key = (cpu, ram, sid)
        value = self.memo.get(key)
        if value is None:
            if len(self.memo) >= MEMO_LIMIT:
                self.memo.clear()
            value = self.memo[key] = frag(self, sid, cpu, ram)
        return value


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
    flat = tuple(
        (w_lambda, w_use, cpu, ram, level)
        for level, level_terms in enumerate(terms)
        for w_lambda, w_use, cpu, ram, _ in level_terms
    )
    return ClassTable(table.version, base, tuple(levels), terms, flat, uniform)


def level_stats(free: Devices, levels: tuple[Level, ...]) -> Stats:
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


def frag(ct: ClassTable, sid: int, cpu: int, ram: int) -> float:
    """The measure in the module's docstring, for a host in state ``sid`` with ``cpu``
    and ``ram`` free (never negative: only hosts that fit are scored)."""
    gpu, stats = ct.gpu[sid], ct.stats[sid]
    total = gpu * ct.base
    for (w_lambda, w_use, t_cpu, t_ram, level), k in zip(ct.flat, ct.tasks[sid], strict=True):
        if k:
            if t_cpu * k > cpu:
                k = cpu // t_cpu
            if t_ram * k > ram:
                k = ram // t_ram
            total += w_lambda * (stats[level][1] if k else gpu) - k * w_use
        else:
            total += w_lambda * gpu
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
    before: tuple[int, float] | None = None
    """The worker's device state in ``table`` and its ``frag`` now."""


def options(w: WorkerState, d: Demand, ct: ClassTable, scale: Scale, key: Hashable) -> list[Option]:
    """How much ``frag`` grows if ``w`` takes ``d`` now, per choice of devices: for a
    share, each distinct free amount of a device that can hold it; else what ``fit``
    takes. Empty if ``w`` cannot take ``d`` now. Kept per request ``key`` until the
    worker changes."""
    scores = w.scores
    if not (
        isinstance(scores, WorkerScores)
        and scores.stamp == w.stamp
        and scores.table is ct
        and (scores.scale is scale or scores.scale == scale)
    ):
        scores = w.scores = WorkerScores(w.stamp, ct, scale, {})
    found = scores.options.get(key)
    if found is None:
        found = scores.options[key] = _options(w, d, ct, scale, scores)
    return found


def _options(
    w: WorkerState, d: Demand, ct: ClassTable, scale: Scale, scores: WorkerScores
) -> list[Option]:
    pick = _pick(w, d)
    if pick is None:
        return []
    if scores.before is None:
        sid = ct.state(tuple(sorted(w.free_dev)) if ct.uniform else tuple(w.free_dev))
        scores.before = (sid, ct.frag(w.free_cpu, w.usable_ram(), sid))
    sid, now = scores.before
    cpu, ram = w.free_cpu - d.cpu, w.usable_ram() - d.ram
    fit = leftover(w, d, pick, scale)  # the same whichever devices a share takes
    share = d.gpu_share
    if not share:
        return [(ct.frag(cpu, ram, _taken(ct, sid, w.free_dev, pick)) - now, fit, pick)]
    out: list[Option] = []
    seen: set[int] = set()
    any_device = not d.gpu_models and not d.gpu_mem
    for slot, free in enumerate(w.free_dev):
        # devices alike score alike; with per-device eligibility, each device is its own
        if free < share or free in seen or not (any_device or w.cap.device_ok(slot, d)):
            continue
        if ct.uniform:
            seen.add(free)
            after = ct.moved(sid, free, free - share, 1)
        else:
            moved = list(w.free_dev)
            moved[slot] = free - share
            after = ct.state(tuple(moved))
        out.append((ct.frag(cpu, ram, after) - now, fit, ((slot, share),)))
    return out


def _pick(w: WorkerState, d: Demand) -> DevicePick | None:
    """``w.fit(d)``, except that a share's device is left to the caller to weigh."""
    if not d.gpu_share:
        return w.fit(d)
    if d.cpu > w.free_cpu or d.ram > w.usable_ram():
        return None
    if any(amount > w.free_custom.get(name, 0) for name, amount in d.custom):
        return None
    return ((0, d.gpu_share),)  # what ``leftover`` counts: the amount, not the slot


def _taken(ct: ClassTable, sid: int, free_dev: list[int], pick: DevicePick) -> int:
    """The state once the whole devices ``pick`` are taken (none for CPU-only work)."""
    if not pick:
        return sid
    if ct.uniform:
        return ct.moved(sid, MILLI, 0, len(pick))
    taken = list(free_dev)
    for slot, _ in pick:
        taken[slot] = 0
    return ct.state(tuple(taken))
