"""Workers grouped by shape, each group indexed by free capacity.

Nomad's lesson: identical machines answer feasibility questions identically,
so a shape class (same totals, same devices, same non-unique labels) is
checked once per distinct request, not once per worker. Inside a class the
members sit in lists sorted by free capacity along a few axes, so a policy
can bisect to "just enough" (bin-pack) or start from "most free" (spread)
instead of scanning every member.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

from coordinator.placement.grid import SEQ_BITS, GpuGrid, GridKey, filed
from coordinator.placement.workers import WorkerState
from shared.capacity import Capacity, Demand
from shared.resources import MILLI

UNIQUE_LABEL_KEYS = frozenset({"hostname"})
UNIQUE_LABEL_PREFIX = "unique."


def is_unique_label(key: str) -> bool:
    """Labels that differ on every host are kept out of the shape key."""
    return key in UNIQUE_LABEL_KEYS or key.startswith(UNIQUE_LABEL_PREFIX)


class Axis(IntEnum):
    CPU = 0
    RAM = 1
    GPU_SHARE = 2
    GPU_WHOLE = 3
    BALANCE = 4
    """Free share (per mille) of the scarcer of CPU and RAM."""


# The members as plain names: reading an enum's attribute costs ~100 ns in Python 3.11.
CPU, RAM, GPU_SHARE, GPU_WHOLE, BALANCE = Axis


def index_keys(w: WorkerState) -> list[int]:
    """A worker's key on each axis, in ``Axis`` order."""
    cpu, ram, free = w.free_cpu, w.usable_ram(), w.free_dev
    return [cpu, ram, max(free) if free else 0, free.count(MILLI), _balance(cpu, ram, w.cap)]


def _balance(cpu: int, ram: int, cap: Capacity) -> int:
    cpu = cpu * MILLI // cap.cpu if cap.cpu else MILLI
    ram = ram * MILLI // cap.ram if cap.ram else MILLI
    return cpu if cpu <= ram else ram  # min(), without a builtin's call


IndexEntry = int
"""``filed(free amount on the axis, worker seq)``; ``entry & SEQ_MASK`` is the member's seq."""

_ALL_AXES = tuple(Axis)


class Binding(NamedTuple):
    """The index a demand is walked on (members from ``need`` up fit in CPU and RAM),
    and the exact axis and amount to walk for the members that only may fit."""

    axis: Axis
    need: int
    total: int
    floor: int | None = None
    """On the balance axis, members from ``floor`` up may fit; below it none can."""


def rekey(worker: WorkerState, gpu: bool) -> list[int]:
    """Recompute a worker's index keys (``index_keys``); GPU axes only when its devices
    changed. Returns the new keys; the old list is left as it was, for ``refile``."""
    keys = worker.index_keys
    cpu, free_ram, live = worker.free_cpu, worker.free_ram, worker.live_ram
    ram = free_ram if live is None else min(free_ram, live)  # usable_ram()
    cap = worker.cap  # _balance(cpu, ram, cap), spelt out: one call fewer a placement
    on_cpu = cpu * MILLI // cap.cpu if cap.cpu else MILLI
    on_ram = ram * MILLI // cap.ram if cap.ram else MILLI
    balance = on_cpu if on_cpu <= on_ram else on_ram
    if gpu:
        free = worker.free_dev
        most = max(free) if free else 0  # max(default=) parses a keyword: twice the cost
        new = [cpu, ram, most, free.count(MILLI), balance]
    else:
        new = [cpu, ram, keys[GPU_SHARE], keys[GPU_WHOLE], balance]
    worker.index_keys = new
    return new


def _per_mille(need: int, total: int) -> int:
    """Smallest per-mille share of ``total`` that covers ``need`` (rounded up)."""
    return -(-need * MILLI // total) if total else 0


ShapeKey = tuple[Capacity, tuple[tuple[str, str], ...]]


def shape_key(worker: WorkerState) -> ShapeKey:
    labels = tuple(sorted((k, v) for k, v in worker.labels.items() if not is_unique_label(k)))
    return (worker.cap, labels)


def family_key(worker: WorkerState) -> ShapeKey:
    """Workers of the same totals and devices, whatever their labels."""
    return (worker.cap, ())


LOG_LIMIT = 64


def grid_key(keys: list[int]) -> GridKey:
    return (keys[CPU], keys[GPU_WHOLE], keys[GPU_SHARE])


@dataclass(slots=True, eq=False)
class ShapeClass:
    key: ShapeKey
    members: dict[int, WorkerState] = field(default_factory=dict)
    axes: tuple[list[IndexEntry], ...] = field(default_factory=lambda: ([], [], [], [], []))
    """The free-capacity indexes, one per ``Axis``; read them through ``index``."""
    stale: tuple[dict[int, tuple[WorkerState, int]], ...] = field(
        default_factory=lambda: ({}, {}, {}, {}, {})
    )
    """Per axis, the members whose key moved since it was last read, each with the key it
    is filed under. An index is put in order when it is read, not at every change: on GPU
    hosts the default policy walks ``grid`` and reads the indexes only to explain a wait."""
    has_gpu: bool = field(init=False)
    grid: GpuGrid | None = field(init=False)
    stamp: int = 0
    """Bumped whenever a member joins, leaves or changes: what ``memo`` entries are valid for."""
    log: list[WorkerState] = field(default_factory=list)
    """The members behind the last ``len(log)`` bumps of ``stamp``, oldest first."""
    table: object = None
    """The fragmentation table of this class's totals (``fragment_select.py``)."""

    def __post_init__(self) -> None:
        self.has_gpu = bool(self.key[0].gpu_models)
        self.grid = GpuGrid(len(self.key[0].gpu_models)) if self.has_gpu else None

    @property
    def cap(self) -> Capacity:
        return self.key[0]

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.key[1])

    def add(self, worker: WorkerState) -> None:
        self.members[worker.seq] = worker
        worker.index_keys = index_keys(worker)
        for axis, value in zip(self.axes, worker.index_keys, strict=True):
            insort(axis, filed(value, worker.seq))
        if self.grid is not None:
            self.grid.add(worker, grid_key(worker.index_keys))
        self.touch(worker)

    def remove(self, worker: WorkerState) -> None:
        del self.members[worker.seq]
        for axis, stale, value in zip(self.axes, self.stale, worker.index_keys, strict=True):
            was = stale.pop(worker.seq, None)
            key = value if was is None else was[1]
            del axis[bisect_left(axis, filed(key, worker.seq))]
        if self.grid is not None:
            self.grid.remove(worker, grid_key(worker.index_keys))
        self.touch(worker)

    def touch(self, worker: WorkerState) -> None:
        """Note that ``worker`` joined, left or changed."""
        self.stamp += 1
        self.log.append(worker)
        if len(self.log) > 2 * LOG_LIMIT:
            del self.log[:LOG_LIMIT]

    def refile(self, worker: WorkerState, old: list[int], new: list[int]) -> None:
        """Note that a member's keys moved from ``old`` to ``new`` (see ``rekey``): in the
        grid now, in the indexes when they are next read."""
        self.stamp += 1  # self.touch(worker), spelt out: twice a placement on a labelled host
        log = self.log
        log.append(worker)
        if len(log) > 2 * LOG_LIMIT:
            del log[:LOG_LIMIT]
        seq = worker.seq
        grid = self.grid
        if grid is not None:
            cpu, whole, share = old[CPU], old[GPU_WHOLE], old[GPU_SHARE]
            if cpu != new[CPU] or whole != new[GPU_WHOLE] or share != new[GPU_SHARE]:
                grid.move(seq, (cpu, whole, share), (new[CPU], new[GPU_WHOLE], new[GPU_SHARE]))
        # one line per axis: a loop over the five costs twice as much, at every placement
        on_cpu, on_ram, on_share, on_whole, on_balance = self.stale
        if old[CPU] != new[CPU] and seq not in on_cpu:
            on_cpu[seq] = (worker, old[CPU])
        if old[RAM] != new[RAM] and seq not in on_ram:
            on_ram[seq] = (worker, old[RAM])
        if old[GPU_SHARE] != new[GPU_SHARE] and seq not in on_share:
            on_share[seq] = (worker, old[GPU_SHARE])
        if old[GPU_WHOLE] != new[GPU_WHOLE] and seq not in on_whole:
            on_whole[seq] = (worker, old[GPU_WHOLE])
        if old[BALANCE] != new[BALANCE] and seq not in on_balance:
            on_balance[seq] = (worker, old[BALANCE])

    def index(self, axis: Axis) -> list[IndexEntry]:
        """The members by free amount on ``axis``, least first."""
        stale = self.stale[axis]
        if stale:
            entries = self.axes[axis]
            for seq, (worker, was) in stale.items():
                now = worker.index_keys[axis]
                if now != was:
                    del entries[bisect_left(entries, filed(was, seq))]
                    insort(entries, filed(now, seq))
            stale.clear()
        return self.axes[axis]

    def primary(self, demand: Demand) -> tuple[Axis, int, int]:
        """The axis that binds this demand here, the amount needed on it and its total."""
        cap = self.cap
        if demand.gpu_whole:
            return GPU_WHOLE, demand.gpu_whole, len(cap.gpu_models)
        if demand.gpu_share:
            return GPU_SHARE, demand.gpu_share, 1000
        if cap.ram and demand.ram * max(cap.cpu, 1) > demand.cpu * cap.ram:
            return RAM, demand.ram, cap.ram
        return CPU, demand.cpu, cap.cpu

    def binding(self, demand: Demand) -> Binding:
        """Where to walk for this demand (fixed per class and demand, so plans cache it).

        GPU demands walk a GPU axis: GPU fragmentation is what packing must
        avoid. Other demands walk the balance axis (free share of the scarcer
        of CPU and RAM). From the demand's larger share of the class's CPU or
        RAM upwards, every member has room in both, so a machine whose RAM is
        gone while its cores idle is cut off by the bisection instead of being
        skipped one by one. The members that may fit all the same are tried
        last (``maybe_fits``). A demand that needs no RAM (or no CPU) walks the
        other dimension's own axis.
        """
        if demand.gpu_whole or demand.gpu_share:
            return Binding(*self.primary(demand))
        cap = self.cap
        if not demand.ram or not cap.ram:
            return Binding(CPU, demand.cpu, cap.cpu)
        if not demand.cpu or not cap.cpu:
            return Binding(RAM, demand.ram, cap.ram)
        cpu, ram = _per_mille(demand.cpu, cap.cpu), _per_mille(demand.ram, cap.ram)
        floor = min(demand.cpu * MILLI // cap.cpu, demand.ram * MILLI // cap.ram)
        return Binding(BALANCE, max(cpu, ram), MILLI, floor)

    def has_room(self, b: Binding) -> bool:
        """Whether any member could take the demand now, by its binding axis alone."""
        return self.most_free(b.axis) >= (b.need if b.floor is None else b.floor)

    def maybe_fits(self, demand: Demand, b: Binding) -> tuple[list[IndexEntry], range] | None:
        """Members that may fit without surely fitting, from whichever range is shortest:
        the balance axis down to ``b.floor``, or the CPU or RAM axis from the demand up."""
        if b.floor is None:
            return None
        # the sizes first, by bisection; one range for the shortest (first of equals)
        balance, cpu, ram = self.index(BALANCE), self.index(CPU), self.index(RAM)
        top, bottom = (
            bisect_left(balance, b.need << SEQ_BITS),
            bisect_left(balance, b.floor << SEQ_BITS),
        )
        first_cpu = bisect_left(cpu, demand.cpu << SEQ_BITS)
        first_ram = bisect_left(ram, demand.ram << SEQ_BITS)
        on_balance, on_cpu, on_ram = top - bottom, len(cpu) - first_cpu, len(ram) - first_ram
        if on_balance <= on_cpu and on_balance <= on_ram:
            return (balance, range(top - 1, bottom - 1, -1)) if on_balance > 0 else None
        if on_cpu <= on_ram:
            return (cpu, range(first_cpu, len(cpu))) if on_cpu else None
        return (ram, range(first_ram, len(ram))) if on_ram else None

    def short_on(self, axis: Axis, need: int) -> int:
        """How many members have less than ``need`` free on ``axis``."""
        return bisect_left(self.index(axis), need << SEQ_BITS) if need else 0

    def most_free(self, axis: Axis) -> int:
        entries = self.index(axis)
        return entries[-1] >> SEQ_BITS if entries else -1

    def walk_up(self, axis: Axis, start: int) -> range:
        """Positions in ``index(axis)`` with free amount >= start, least free first."""
        entries = self.index(axis)
        return range(bisect_left(entries, start << SEQ_BITS), len(entries))

    def walk_down(self, axis: Axis, start: int, floor: int) -> range:
        """Positions with floor <= free < start, most free first."""
        entries = self.index(axis)
        stop = bisect_left(entries, floor << SEQ_BITS)
        return range(bisect_left(entries, start << SEQ_BITS) - 1, stop - 1, -1)
