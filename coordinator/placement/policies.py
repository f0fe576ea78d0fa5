"""Placement policies: where to look in a shape class, and how to rank what is found.

A policy never scans a whole class. It names one or more walks over the
class's free-capacity index (bisect to a starting point, move up or down),
takes the first few members that fit from each walk, and scores only those.
Walks are in order of preference: the first walk that yields anything wins,
across all classes of the same preference group.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from coordinator.placement.grid import SEQ_BITS
from coordinator.placement.shapes import Axis, Binding, IndexEntry, ShapeClass
from coordinator.placement.workers import WorkerState
from shared.capacity import Demand, DevicePick
from shared.resources import MILLI, POLICY_NAMES


class Walk(NamedTuple):
    """Positions in one free-capacity index, in the order a policy wants them tried.

    ``sign`` orients the score: +1 ranks tight fits first, -1 roomy ones.
    """

    entries: list[IndexEntry]
    positions: range
    sign: int


def new_walk(entries: list[IndexEntry], positions: range, sign: int) -> Walk:
    """``Walk(entries, positions, sign)`` without the named tuple's ``__new__``, a Python
    function that more than doubles the cost of making one (a decision makes a few)."""
    return _tuple(Walk, (entries, positions, sign))


_tuple = tuple.__new__


@dataclass(frozen=True, slots=True)
class Scale:
    """The largest total of each dimension in the pool, to compare workers of any size."""

    cpu: int
    ram: int
    gpus: int
    per_axis: tuple[int, ...] = field(init=False, repr=False, compare=False)
    """What ``axis`` answers, per ``Axis``: made once, not at every call."""

    def __post_init__(self) -> None:
        per_axis = tuple(n or 1 for n in (self.cpu, self.ram, MILLI, self.gpus, MILLI))
        object.__setattr__(self, "per_axis", per_axis)

    def axis(self, axis: Axis) -> int:
        return self.per_axis[axis]


WEIGHTS = {"cpu": 1.0, "ram": 0.5, "gpu": 2.0}
"""GPUs weigh most: a stranded GPU share is the costliest fragment. RAM weighs
least: it is rarely what runs out first. Tuned on the openb trace, where these
weights beat equal ones by about one point of GPU allocation."""


_CPU, _RAM, _GPU = WEIGHTS["cpu"], WEIGHTS["ram"], WEIGHTS["gpu"]


def leftover(w: WorkerState, d: Demand, devices: DevicePick, scale: Scale) -> float:
    """What stays free on ``w`` after placing ``d``, as a share of the pool's largest worker.

    Small means a tight fit (bin-pack wants it), large means room to spare
    (spread wants it). Shares of the largest worker rather than of ``w``
    itself, as in the Best-fit baseline of the FGD paper: a small machine
    filled to the brim is a tighter fit than a big one half used.
    """
    total = _CPU * (w.free_cpu - d.cpu) / (scale.cpu or 1)
    total += _RAM * (w.free_ram - d.ram) / (scale.ram or 1)
    if w.free_dev:
        used = 0
        for _, milli in devices:
            used += milli
        total += _GPU * (sum(w.free_dev) - used) / (MILLI * (scale.gpus or 1))
    return total


def spare(cpu: int, ram: int, gpu: int | None, scale: Scale) -> float:
    """``leftover`` from the amounts left: cores, RAM and (on a GPU host) milli-GPU.

    The same arithmetic, written out twice: ``leftover`` is asked of every candidate
    and a call more costs it a tenth (tests/property/test_score_shortcuts.py)."""
    total = _CPU * cpu / (scale.cpu or 1)
    total += _RAM * ram / (scale.ram or 1)
    if gpu is not None:
        total += _GPU * gpu / (MILLI * (scale.gpus or 1))
    return total


class Policy(Protocol):
    name: str
    per_walk: int
    """How many fitting members of one walk are scored."""
    classes: int
    """How many shape classes (best estimate first) are walked for candidates."""
    visits: int
    """How many members of one class are looked at before moving on to the next class.

    A policy with ``fragment = True`` ranks GPU hosts by fragmentation instead
    (``fragment_select.py``); the attribute is optional, so older policies keep working.
    """

    def walks(self, cls: ShapeClass, b: Binding) -> list[Walk]:
        """Where to look in ``cls`` among the members from ``b.need`` up on ``b.axis``."""
        ...


class BinPack:
    """Best fit: the member with the least room left after placement.

    Keeps whole machines (and whole GPUs) free for the large requests that
    only an empty machine can take.
    """

    name = "binpack"
    per_walk = 2
    classes = 3
    visits = 32
    fragment = False

    def walks(self, cls: ShapeClass, b: Binding) -> list[Walk]:
        return [new_walk(cls.index(b.axis), cls.walk_up(b.axis, b.need), +1)]


class Spread:
    """Worst fit: the member with the most room left, to balance load."""

    name = "spread"
    per_walk = 2
    classes = 3
    visits = 32
    fragment = False

    def walks(self, cls: ShapeClass, b: Binding) -> list[Walk]:
        top = cls.most_free(b.axis) + 1
        return [new_walk(cls.index(b.axis), cls.walk_down(b.axis, top, b.need), -1)]


class Hybrid:
    """Fragmentation-aware on GPU hosts; pack until half used, then spread, on others.

    On GPU hosts a half-used GPU is a fragment, not a balanced load: work goes
    where it leaves the least GPU capacity unusable for the mix of recent
    requests (``fragment.py``), and CPU work that has to land on a GPU host
    goes where the GPUs are already taken or cores are plentiful. (Preferences
    on per-host labels need every member weighed; those requests bin-pack GPU
    hosts instead.) On other hosts, work fills a machine up to ``threshold`` of
    its binding dimension, as Ray's default does, so tasks share few machines
    while load is light and no machine runs hot when it is heavy.
    """

    name = "hybrid"
    per_walk = 2
    classes = 3
    visits = 32
    fragment = True

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self._left: dict[int, int] = {}
        """``round(total * (1 - threshold))`` per total, for ``_left_for`` as threshold."""
        self._left_for = threshold

    def walks(self, cls: ShapeClass, b: Binding) -> list[Walk]:
        axis, need, total, _ = b
        entries = cls.index(axis)
        if cls.has_gpu:
            return [new_walk(entries, cls.walk_up(axis, need), +1)]
        if self._left_for != self.threshold:
            self._left.clear()
            self._left_for = self.threshold
        left = self._left.get(total)
        if left is None:
            left = self._left[total] = round(total * (1 - self.threshold))
        pivot = bisect_left(entries, (need + left) << SEQ_BITS)
        floor = bisect_left(entries, need << SEQ_BITS, 0, pivot)
        return [
            new_walk(entries, range(pivot, len(entries)), +1),
            new_walk(entries, range(pivot - 1, floor - 1, -1), -1),
        ]


POLICIES: dict[str, Policy] = {p.name: p for p in (BinPack(), Spread(), Hybrid())}
assert set(POLICIES) == set(POLICY_NAMES), "shared.resources.POLICY_NAMES is out of date"
DEFAULT_POLICY = "hybrid"


def get_policy(policy: str | Policy | None) -> Policy:
    if policy is None:
        return POLICIES[DEFAULT_POLICY]
    if not isinstance(policy, str):
        return policy
    try:
        return POLICIES[policy]
    except KeyError:
        raise ValueError(
            f"unknown placement policy {policy!r}; choose one of {sorted(POLICIES)}"
        ) from None
