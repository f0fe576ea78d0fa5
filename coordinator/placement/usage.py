"""A worker's capacity, reservations and free amounts in user units, for display and tests."""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.placement.workers import WorkerState
from shared.resources import MILLI


@dataclass(frozen=True, slots=True)
class DeviceUsage:
    index: int
    model: str
    memory_mb: int
    free: float
    """Free share of the device: 1.0 is entirely free."""


@dataclass(frozen=True, slots=True)
class WorkerUsage:
    name: str
    labels: dict[str, str]
    cpu: float
    cpu_free: float
    ram_mb: int
    ram_free_mb: int
    devices: tuple[DeviceUsage, ...]
    resources: dict[str, float]
    resources_free: dict[str, float]
    reservations: int

    @property
    def cpu_reserved(self) -> float:
        return self.cpu - self.cpu_free

    @property
    def ram_reserved_mb(self) -> int:
        return self.ram_mb - self.ram_free_mb

    @property
    def gpus_free(self) -> float:
        return sum(d.free for d in self.devices)


def usage_of(w: WorkerState) -> WorkerUsage:
    cap = w.cap
    return WorkerUsage(
        name=w.name,
        labels=dict(w.labels),
        cpu=cap.cpu / MILLI,
        cpu_free=w.free_cpu / MILLI,
        ram_mb=cap.ram,
        ram_free_mb=w.free_ram,
        devices=tuple(
            DeviceUsage(cap.gpu_index[s], cap.gpu_models[s], cap.gpu_mem[s], free / MILLI)
            for s, free in enumerate(w.free_dev)
        ),
        resources={k: v / MILLI for k, v in cap.custom},
        resources_free={k: v / MILLI for k, v in w.free_custom.items()},
        reservations=len(w.held),
    )
