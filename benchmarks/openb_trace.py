"""The Alibaba openb trace as the replay reads it, and the workloads derived from it.

The FGD paper (Weng et al., USENIX ATC '23, Sec. 6) also scores policies on
variants of the trace, sampled from its tasks so that one kind weighs more.
The variants here follow the same recipes, from the default task list and a
fixed seed (the same workload for every replay seed):

* ``share``: every GPU task a share of one device (the paper's gpushare100):
  each other GPU task is replaced by a share task drawn from the trace's;
* ``multigpu``: multi-GPU tasks ask for half of all requested GPU (multigpu50):
  clones of the multi-GPU tasks are added until they do;
* ``gpuspec``: a third of the GPU tasks constrained to one GPU model (gpuspec33),
  drawn in proportion to the GPUs of the models whose machines could hold it;
* ``cpu250``: 2.5 times as many CPU-only tasks, the added ones clones of the trace's.
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from shared.resources import MILLI, GPUDevice, ResourceRequest, WorkerSpec

DEFAULT_TRACE_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "openb"
GPU_NODES = "openb_node_list_gpu_node.csv"
ALL_NODES = "openb_node_list_all_node.csv"
PODS = "openb_pod_list_default.csv"
CHECKPOINTS = (100, 130)
"""Arrived GPU demand, in percent of capacity, at which allocation is read."""


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int
    gpu_spec: str

    @property
    def gpu_demand(self) -> int:
        """Requested GPU in milli-devices: a share of one device, or whole devices."""
        if self.is_share:
            return self.gpu_milli
        return self.num_gpu * MILLI

    @property
    def is_share(self) -> bool:
        return self.num_gpu == 1 and self.gpu_milli < MILLI

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(m for m in self.gpu_spec.split("|") if m) if self.num_gpu else ()

    def request(self) -> ResourceRequest:
        return ResourceRequest(
            cpu=self.cpu_milli / MILLI,
            ram_mb=self.memory_mib,
            gpus=self.gpu_demand / MILLI,
            gpu_models=self.models,
        )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def load_nodes(path: Path) -> list[WorkerSpec]:
    nodes = []
    for row in read_csv(path):
        count = int(row["gpu"] or 0)
        devices = tuple(GPUDevice(index=i, model=row["model"]) for i in range(count))
        nodes.append(
            WorkerSpec(
                name=row["sn"],
                cpu=int(row["cpu_milli"]) / MILLI,
                ram_mb=int(row["memory_mib"]),
                gpus=devices,
            )
        )
    return nodes


def load_tasks(path: Path) -> list[Task]:
    tasks = [
        Task(
            name=row["name"],
            cpu_milli=int(row["cpu_milli"]),
            memory_mib=int(row["memory_mib"]),
            num_gpu=int(row["num_gpu"] or 0),
            gpu_milli=int(row["gpu_milli"] or 0),
            gpu_spec=row.get("gpu_spec") or "",
        )
        for row in read_csv(path)
    ]
    return sorted(tasks, key=lambda t: t.name)


def arrival_order(tasks: Sequence[Task], capacity: int, seed: int) -> list[Task]:
    """Shuffled tasks, then random clones, up to 130% of capacity in requested GPU."""
    rng = random.Random(seed)
    target = capacity * CHECKPOINTS[-1] // 100
    order = list(tasks)
    rng.shuffle(order)
    stream: list[Task] = []
    arrived = 0
    for task in order:
        if arrived >= target:
            return stream
        stream.append(task)
        arrived += task.gpu_demand
    while arrived < target:
        clone = rng.choice(tasks)
        stream.append(clone)
        arrived += clone.gpu_demand
    return stream


# -- derived workloads ---------------------------------------------------------------


def _share_only(
    tasks: Sequence[Task], nodes: Sequence[WorkerSpec], rng: random.Random
) -> list[Task]:
    shares = [t for t in tasks if t.is_share]
    return [
        t if not t.num_gpu or t.is_share else replace(rng.choice(shares), name=t.name)
        for t in tasks
    ]


def _multi_gpu(
    tasks: Sequence[Task], nodes: Sequence[WorkerSpec], rng: random.Random
) -> list[Task]:
    multi = [t for t in tasks if t.num_gpu > 1]
    out = list(tasks)
    total = sum(t.gpu_demand for t in tasks)
    part = sum(t.gpu_demand for t in multi)
    while part < total - part:
        clone = rng.choice(multi)
        out.append(replace(clone, name=f"{clone.name}-multigpu-{len(out)}"))
        part += clone.gpu_demand
        total += clone.gpu_demand
    return sorted(out, key=lambda t: t.name)


def _hosts(task: Task, node: WorkerSpec) -> bool:
    return (
        len(node.gpus) >= task.num_gpu
        and node.cpu * MILLI >= task.cpu_milli
        and node.ram_mb >= task.memory_mib
    )


def _gpu_spec(tasks: Sequence[Task], nodes: Sequence[WorkerSpec], rng: random.Random) -> list[Task]:
    gpu_tasks = [i for i, t in enumerate(tasks) if t.num_gpu]
    chosen = set(rng.sample(gpu_tasks, round(len(gpu_tasks) / 3)))
    out = list(tasks)
    for i in sorted(chosen):
        weights: Counter[str] = Counter()
        for node in nodes:
            if node.gpus and _hosts(tasks[i], node):
                weights[node.gpus[0].model] += len(node.gpus)
        models = sorted(weights)
        model = rng.choices(models, weights=[weights[m] for m in models])[0]
        out[i] = replace(tasks[i], gpu_spec=model)
    return out


def _cpu250(tasks: Sequence[Task], nodes: Sequence[WorkerSpec], rng: random.Random) -> list[Task]:
    cpu_only = [t for t in tasks if not t.num_gpu]
    out = list(tasks)
    for n in range(len(cpu_only) * 3 // 2):
        clone = rng.choice(cpu_only)
        out.append(replace(clone, name=f"{clone.name}-cpu-{n}"))
    return sorted(out, key=lambda t: t.name)


Derive = Callable[[Sequence[Task], Sequence[WorkerSpec], random.Random], list[Task]]
WORKLOADS: dict[str, Derive | None] = {
    "default": None,
    "share": _share_only,
    "multigpu": _multi_gpu,
    "gpuspec": _gpu_spec,
    "cpu250": _cpu250,
}
"""Workload name -> how it is derived from the trace's task list (None: as it is)."""


def workload(name: str, tasks: Sequence[Task], nodes: Sequence[WorkerSpec]) -> list[Task]:
    """The named workload's task list, sorted by name; the same for every replay seed."""
    derive = WORKLOADS[name]
    if derive is None:
        return list(tasks)
    return derive(tasks, nodes, random.Random(f"openb-{name}"))
