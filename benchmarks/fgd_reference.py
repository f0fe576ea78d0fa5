"""Exhaustive FGD (Weng et al., USENIX ATC '23): the reference the pool is measured against.

Written from the paper's definitions and the rules of its simulator, independent
of the pool, and without the pool's shortcuts: every node that can hold a task
is scored, and for a GPU share every device that can hold it.

* Target workload: the "typical" task shapes (CPU, device count, share per
  device, allowed models) of the whole task list, most frequent first, until
  they cover 95% of the tasks, weighted by their counts. CPU-only shapes are
  included, as in the paper's runs. Memory is not part of a shape.
* Fragmentation of a node for one shape: the node's free GPU that the shape
  cannot use. All of it when the shape cannot run there at all (no GPU, other
  model, too few cores, too few devices with enough free share); otherwise the
  free share on the devices too small for it. A node's fragmentation is the
  weighted sum over the shapes.
* A task goes to the node (and device) whose fragmentation grows least,
  scored as the paper's simulator scores it: ``int(100 * sigmoid(-growth /
  1000))`` with the weights normalised to 1, so growths within a few hundredths
  of a GPU tie; ties go to the node with the smallest name, and on a node to
  the device with the smallest index. Whole devices are the first free ones.
  (Scored exactly instead, FGD placed about one point less on the default
  trace: the rounding makes it pack near-equal choices onto the first nodes.)

Nodes in the same state score the same, so each decision scores every
distinct state once, and fragmentation is memoised per (model, cores band,
free shares).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from benchmarks.openb_trace import Task
from shared.resources import MILLI, WorkerSpec

Shape = tuple[int, int, int, frozenset[str]]
"""CPU milli-cores, devices, milli-share per device (1000 for whole ones), allowed models."""

State = tuple[str, int, int, tuple[int, ...]]
"""A node's model, free CPU, free RAM and free device shares (sorted)."""

POPULARITY = 0.95


def shape_of(task: Task) -> Shape:
    if not task.num_gpu:
        return (task.cpu_milli, 0, 0, frozenset())
    per_device = task.gpu_milli if task.is_share else MILLI
    return (task.cpu_milli, task.num_gpu, per_device, frozenset(task.models))


def typical_shapes(
    tasks: Iterable[Task], popularity: float = POPULARITY
) -> list[tuple[Shape, int]]:
    """The most frequent shapes covering ``popularity`` of the tasks, with their counts."""
    counts = Counter(shape_of(t) for t in tasks)
    total = sum(counts.values())
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], sorted(kv[0][3]), kv[0][:3]))
    kept: list[tuple[Shape, int]] = []
    covered = 0
    for shape, count in ordered:
        if covered >= popularity * total:
            break
        kept.append((shape, count))
        covered += count
    return kept


class Fragmentation:
    """Fragmentation of a node state for the typical shapes, memoised."""

    def __init__(self, shapes: Sequence[tuple[Shape, int]]) -> None:
        self.shapes = shapes
        self.total = sum(count for _, count in shapes)
        self.bands = sorted({s[0] for s, _ in shapes})
        self._memo: dict[tuple[str, int, tuple[int, ...]], int] = {}

    def __call__(self, model: str, cpu: int, devices: tuple[int, ...]) -> int:
        key = (model, bisect_right(self.bands, cpu), devices)
        value = self._memo.get(key)
        if value is None:
            value = self._memo[key] = self._compute(model, cpu, devices)
        return value

    def _compute(self, model: str, cpu: int, devices: tuple[int, ...]) -> int:
        free = sum(devices)
        if not free:
            return 0
        total = 0
        for (s_cpu, count, share, models), weight in self.shapes:
            unusable = free
            blocked = not count or (models and model not in models) or s_cpu > cpu
            if not blocked and sum(1 for d in devices if d >= share) >= count:
                unusable = sum(d for d in devices if d < share)
            total += weight * unusable
        return total


@dataclass(slots=True)
class Node:
    name: str
    model: str
    cpu: int
    ram: int
    devices: list[int]

    def state(self) -> State:
        return (self.model, self.cpu, self.ram, tuple(sorted(self.devices)))


def _fits(state: State, task: Task) -> bool:
    model, cpu, ram, devices = state
    if task.cpu_milli > cpu or task.memory_mib > ram:
        return False
    if not task.num_gpu:
        return True
    if task.models and model not in task.models:
        return False
    if task.is_share:
        return bool(devices) and devices[-1] >= task.gpu_milli
    return devices.count(MILLI) >= task.num_gpu


class FGDReference:
    """A cluster placed by exhaustive FGD; ``place`` answers whether the task got a node."""

    def __init__(self, nodes: Sequence[WorkerSpec], tasks: Sequence[Task]) -> None:
        self.nodes = [
            Node(
                n.name,
                n.gpus[0].model if n.gpus else "",
                round(n.cpu * MILLI),
                n.ram_mb,
                [MILLI] * len(n.gpus),
            )
            for n in sorted(nodes, key=lambda n: n.name)
        ]
        self.frag = Fragmentation(typical_shapes(tasks))
        self._groups: dict[State, set[int]] = {}
        for i, node in enumerate(self.nodes):
            self._groups.setdefault(node.state(), set()).add(i)

    def place(self, task: Task) -> bool:
        best: tuple[int, int] | None = None  # (-score, node index)
        for state, members in self._groups.items():
            if _fits(state, task):
                option = (-max(self._scores(state, task).values()), min(members))
                if best is None or option < best:
                    best = option
        if best is None:
            return False
        self._apply(best[1], task, -best[0])
        return True

    def score(self, growth: int) -> int:
        """The simulator's 0-100 score of a growth in (count-weighted) milli-GPU."""
        return int(100 / (1 + math.exp(growth / self.frag.total / 1000)))

    def _scores(self, state: State, task: Task) -> dict[int, int]:
        """Score per free share of the device a GPU share would go to (0: other tasks)."""
        model, cpu, _, devices = state
        before = self.frag(model, cpu, devices)
        left = cpu - task.cpu_milli
        if not task.num_gpu:
            return {0: self.score(self.frag(model, left, devices) - before)}
        if task.is_share:
            out = {}
            for free in {d for d in devices if d >= task.gpu_milli}:
                after = list(devices)
                after[after.index(free)] = free - task.gpu_milli
                grown = self.frag(model, left, tuple(sorted(after))) - before
                out[free] = self.score(grown)
            return out
        after = list(devices)
        for _ in range(task.num_gpu):
            after.remove(MILLI)
        grown = self.frag(model, left, tuple(sorted([*after, *[0] * task.num_gpu]))) - before
        return {0: self.score(grown)}

    def _apply(self, index: int, task: Task, score: int) -> None:
        node = self.nodes[index]
        if task.is_share:
            scores = self._scores(node.state(), task)
            taken = next(d for d in node.devices if scores.get(d) == score)
        group = self._groups[node.state()]
        group.discard(index)
        if not group:
            del self._groups[node.state()]
        node.cpu -= task.cpu_milli
        node.ram -= task.memory_mib
        if task.is_share:
            node.devices[node.devices.index(taken)] -= task.gpu_milli  # the first such device
        elif task.num_gpu:
            for _ in range(task.num_gpu):
                node.devices[node.devices.index(MILLI)] = 0
        self._groups.setdefault(node.state(), set()).add(index)

    def stranded(self, cores: int = 4) -> int:
        """Free GPU (milli) on nodes with fewer than ``cores`` free cores."""
        return sum(sum(n.devices) for n in self.nodes if n.cpu < cores * MILLI)

    def allocated(self) -> int:
        return sum(len(n.devices) * MILLI - sum(n.devices) for n in self.nodes)
