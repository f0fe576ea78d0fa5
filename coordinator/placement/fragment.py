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

from collections.abc import Callable
from dataclasses import dataclass, field
from operator import add, itemgetter

from coordinator.placement.mix import MixTable
from shared.capacity import Capacity
from shared.resources import MILLI

LAMBDA = 1.5
"""Weight of FGD's own term beside the fill term. On the openb replay (seeds 42-51) 1.5
placed 0.05-0.1 point more than 0.75, 1.25 or 2; in an exhaustive simulation both terms
together placed about 0.15 point more than either alone."""

Level = tuple[int, tuple[int, ...] | None]
"""(milli-share one task takes from a device, the device slots it may use; None: all)."""
Term = tuple[float, float, int, int, int]
"""(weight * LAMBDA, weight * GPU per task, cpu, ram, devices per task)."""
Flat = tuple[float, float, tuple[float, ...], int, int, int]
"""A term as ``frag`` walks them: (weight * LAMBDA, weight * GPU per task, that times 0, 1,
2, ... tasks up to the most the class's devices could take, cpu, ram, where its level's
free share on devices too small sits in ``Stats``)."""
Stats = tuple[int | float, ...]
"""Per level, one after the other: tasks the devices could take (an int), free share on
devices too small (a float holding an int, as ``frag`` multiplies it by a float: the same
product, in one step), flat, so that a move adds two tuples element by element."""
Devices = tuple[int, ...]
"""Free milli-share of each device: in slot order, or sorted when the table is uniform."""
StateInfo = tuple[Stats, int, tuple[int, ...], int, int, float, bool]
"""Of one device state: level counts, free milli-GPU, per term how many tasks the devices
alone could take, the cores and RAM beyond which more would change no term, the free
milli-GPU as a float, and whether every device's free share is within 0 and a whole
device (else, as after work adopted beyond capacity, ``frag`` takes its slow way)."""
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
    units: Callable[[Stats], tuple[int, ...]]
    """The task counts of each term's level, from ``Stats``."""
    per_task: tuple[int, ...]
    """Devices per task of each term of ``flat``."""
    term_cpu: tuple[int, ...]
    term_ram: tuple[int, ...]
    """Cores and RAM of each term of ``flat``."""
    shared: tuple[int, ...] = ()
    """The terms whose tasks take more than one device each."""
    groups: tuple[tuple[int, int, int], ...] = ()
    """Terms alike in level and devices per task run as many tasks in any state: per such
    group, one of its terms and the most cores and RAM a task of the group takes (what
    bounds the cores and RAM that can count, ``StateInfo``)."""
    uniform: bool = True
    """Whether every level may use every device (no model or memory sets them apart)."""
    states: dict[Devices, int] = field(default_factory=dict)
    """Each device state seen, by its id: the index of its ``devices`` and ``info``."""
    devices: list[Devices] = field(default_factory=list)
    info: list[StateInfo] = field(default_factory=list)
    deltas: dict[tuple[int, int, int], Stats] = field(default_factory=dict)
    """(free before, free after, devices) -> what that move adds to ``Stats``."""
    moves: dict[tuple[int, int, int, int], int] = field(default_factory=dict)
    """(state, free before, free after, devices) -> the state once that many devices with
    the first free amount have the second (uniform tables, where order does not count)."""
    memo: dict[tuple[int, int, int], float] = field(default_factory=dict)
    """``frag`` per (free cores, free RAM, state), the cores and RAM cut to what can count."""

    def state(self, devices: Devices, stats: Stats | None = None) -> int:
        """The id of a device state, interned on first sight (``stats`` if known)."""
        sid = self.states.get(devices)
        if sid is None:
            sid = self.states[devices] = len(self.devices)
            self.devices.append(devices)
            if stats is None:
                stats = level_stats(devices, self.levels)
            self.info.append(self._describe(stats, devices))
        return sid

    def _describe(self, stats: Stats, devices: Devices) -> StateInfo:
        gpu = sum(devices)
        low, high = (devices[0], devices[-1]) if self.uniform else (min(devices), max(devices))
        tasks = self.units(stats)
        if self.shared:
            divided = list(tasks)
            for term in self.shared:
                divided[term] //= self.per_task[term]
            tasks = tuple(divided)
        cpu = ram = 0
        for term, most_cpu, most_ram in self.groups:
            k = tasks[term]
            if most_cpu * k > cpu:
                cpu = most_cpu * k
            if most_ram * k > ram:
                ram = most_ram * k
        return (stats, gpu, tasks, cpu, ram, float(gpu), low >= 0 and high <= MILLI)

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
            stats = tuple(map(add, self.info[sid][0], self._delta(old, new, count)))
            after = self.moves[key] = self.state(tuple(devices), stats)
        return after

    def _delta(self, old: int, new: int, count: int) -> Stats:
        key = (old, new, count)
        delta = self.deltas.get(key)
        if delta is None:
            if len(self.deltas) >= MEMO_LIMIT:
                self.deltas.clear()
            delta = self.deltas[key] = tuple(
                n
                for unit, _ in self.levels
                for n in (
                    count * (new // unit - old // unit),
                    float(count * ((new if new < unit else 0) - (old if old < unit else 0))),
                )
            )
        return delta

    def frag(self, cpu: int, ram: int, sid: int) -> float:
        """``frag`` of a host in state ``sid`` with ``cpu`` and ``ram`` free, remembered."""
        _, _, _, enough_cpu, enough_ram, _, _ = self.info[sid]
        # beyond what its devices' tasks could use, more cores or RAM change nothing
        key = (
            cpu if cpu < enough_cpu else enough_cpu,
            ram if ram < enough_ram else enough_ram,
            sid,
        )
        value = self.memo.get(key)
        if value is None:
            if len(self.memo) >= MEMO_LIMIT:
                self.memo.clear()
            value = self.memo[key] = frag(self, sid, key[0], key[1])
        return value


def class_table(cap: Capacity, table: MixTable, version: int) -> ClassTable:
    """The mix as one class sees it: which shapes could ever run there, and on which devices
    (``version`` is the ranker's: it changes with the mix table and with the pool's scale)."""
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
        (w_lambda, w_use, _uses(w_use, cap, level, count), cpu, ram, 2 * n + 1)
        for n, (level, level_terms) in enumerate(zip(levels, terms, strict=True))
        for w_lambda, w_use, cpu, ram, count in level_terms
    )
    where = [2 * level for level, level_terms in enumerate(terms) for _ in level_terms]
    per_task = tuple(count for level_terms in terms for *_, count in level_terms)
    term_cpu = tuple(cpu for _, _, _, cpu, _, _ in flat)
    term_ram = tuple(ram for _, _, _, _, ram, _ in flat)
    alike: dict[tuple[int, int], tuple[int, int, int]] = {}
    for term, (_, _, _, cpu, ram, small) in enumerate(flat):
        first, most_cpu, most_ram = alike.get((small, per_task[term]), (term, 0, 0))
        alike[small, per_task[term]] = (first, max(most_cpu, cpu), max(most_ram, ram))
    return ClassTable(
        version,
        base,
        tuple(levels),
        terms,
        flat,
        _picker(where),
        per_task,
        term_cpu,
        term_ram,
        tuple(term for term, count in enumerate(per_task) if count > 1),
        tuple(alike.values()),
        uniform,
    )


def _uses(w_use: float, cap: Capacity, level: Level, count: int) -> tuple[float, ...]:
    """``k * w_use`` for every task count ``k`` a term's devices could hold."""
    unit, slots = level
    most = (len(cap.gpu_models) if slots is None else len(slots)) * (MILLI // unit) // count
    return tuple(k * w_use for k in range(most + 1))


def _picker(where: list[int]) -> Callable[[Stats], tuple[int, ...]]:
    """``stats -> tuple(stats[i] for i in where)``, in one call."""
    if len(where) > 1:
        return itemgetter(*where)
    return lambda stats: tuple(int(stats[i]) for i in where)


def level_stats(free: Devices, levels: tuple[Level, ...]) -> Stats:
    some = [f for f in free if f]
    out: list[int | float] = []
    for unit, slots in levels:
        units = small = 0
        for f in some if slots is None else [free[s] for s in slots]:
            units += f // unit
            if f < unit:
                small += f
        out += (units, float(small))
    return tuple(out)


def frag(ct: ClassTable, sid: int, cpu: int, ram: int) -> float:
    """The measure in the module's docstring, for a host in state ``sid`` with ``cpu``
    and ``ram`` free (never negative: only hosts that fit are scored)."""
    stats, gpu, tasks, _, _, fgpu, plain = ct.info[sid]
    total = gpu * ct.base
    if not plain:
        return _frag_anyhow(ct, total, stats, fgpu, tasks, cpu, ram)
    # ``k * w_use`` read from ``uses``, the free amounts as floats: each product in one
    # specialised step, the same floats as ``_frag_anyhow`` gives, added in the same order
    for (w_lambda, _, uses, t_cpu, t_ram, small), k in zip(ct.flat, tasks, strict=False):
        if k:
            if t_cpu * k > cpu:
                k = cpu // t_cpu
            if t_ram * k > ram:
                k = ram // t_ram
            total += w_lambda * (stats[small] if k else fgpu) - uses[k]
        else:
            total += w_lambda * fgpu
    return total


def _frag_anyhow(
    ct: ClassTable,
    total: float,
    stats: Stats,
    gpu: float,
    tasks: tuple[int, ...],
    cpu: int,
    ram: int,
) -> float:
    """``frag`` of a state with a device below 0 or above a whole one free."""
    for (w_lambda, w_use, _, t_cpu, t_ram, small), k in zip(ct.flat, tasks, strict=False):
        if k:
            if t_cpu * k > cpu:
                k = cpu // t_cpu
            if t_ram * k > ram:
                k = ram // t_ram
            total += w_lambda * (stats[small] if k else gpu) - k * w_use
        else:
            total += w_lambda * gpu
    return total
