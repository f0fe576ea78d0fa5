"""A request in exact integer units, computed once per distinct request.

The pool compares and subtracts these numbers on every decision, so they are
plain ints in a slotted dataclass rather than validated floats.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.labels import LabelSelector, PreferredLabel
from shared.resources import MILLI, ResourceRequest, WorkerSpec, to_milli


@dataclass(frozen=True, slots=True)
class Demand:
    cpu: int
    ram: int
    gpu_whole: int
    gpu_share: int
    gpu_models: frozenset[str]
    gpu_mem: int
    custom: tuple[tuple[str, int], ...]
    required: tuple[LabelSelector, ...]
    preferred: tuple[PreferredLabel, ...]

    @classmethod
    def of(cls, request: ResourceRequest) -> Demand:
        gpus = to_milli(request.gpus, "gpus")
        return cls(
            cpu=to_milli(request.cpu, "cpu"),
            ram=request.ram_mb,
            gpu_whole=gpus // MILLI if gpus >= MILLI else 0,
            gpu_share=gpus if 0 < gpus < MILLI else 0,
            gpu_models=frozenset(request.gpu_models),
            gpu_mem=request.gpu_mem_mb,
            custom=tuple(sorted((k, to_milli(v, k)) for k, v in request.resources.items() if v)),
            required=request.required,
            preferred=request.preferred,
        )

    @property
    def wants_gpu(self) -> bool:
        return self.gpu_whole > 0 or self.gpu_share > 0

    @property
    def gpu_milli(self) -> int:
        """GPU amount in milli-devices, whole or share."""
        return self.gpu_whole * MILLI + self.gpu_share


@dataclass(frozen=True, slots=True)
class Capacity:
    """A worker's totals in the same integer units as Demand."""

    cpu: int
    ram: int
    gpu_models: tuple[str, ...]
    gpu_mem: tuple[int, ...]
    gpu_index: tuple[int, ...]
    custom: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, spec: WorkerSpec) -> Capacity:
        return cls(
            cpu=to_milli(spec.cpu, "cpu"),
            ram=spec.ram_mb,
            gpu_models=tuple(g.model for g in spec.gpus),
            gpu_mem=tuple(g.memory_mb for g in spec.gpus),
            gpu_index=tuple(g.index for g in spec.gpus),
            custom=tuple(sorted((k, to_milli(v, k)) for k, v in spec.resources.items())),
        )

    def custom_amount(self, name: str) -> int:
        for key, amount in self.custom:
            if key == name:
                return amount
        return 0

    def device_ok(self, slot: int, demand: Demand) -> bool:
        """Whether device ``slot`` qualifies by model and memory."""
        if demand.gpu_models and self.gpu_models[slot] not in demand.gpu_models:
            return False
        return self.gpu_mem[slot] >= demand.gpu_mem
