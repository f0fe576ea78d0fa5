"""The resource model shared by tasks, agents and the coordinator.

Amounts are stated the way users think (cores as floats, RAM in MB, GPUs as a
count or a share of one device). Accounting inside the pool is done in exact
integers (milli-units) so that reserving and releasing never drifts; that is
why fractional amounts are limited to three decimals.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import cache, cached_property
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.labels import Labels, LabelSelector, PreferredLabel

MILLI = 1000
BUILTIN_RESOURCES = frozenset({"cpu", "ram_mb", "gpus", "gpu_mem_mb"})
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
NonNegInt = Annotated[int, Field(ge=0)]


def to_milli(amount: float, what: str) -> int:
    """Convert a user amount to exact milli-units, refusing finer precision."""
    milli = round(amount * MILLI)
    if not math.isclose(milli, amount * MILLI, abs_tol=1e-6):
        raise ValueError(f"{what}={amount} is finer than 0.001")
    return milli


def check_custom_name(name: str) -> str:
    if name in BUILTIN_RESOURCES:
        raise ValueError(f"{name!r} is a built-in resource; state it with its own field")
    if not _NAME_RE.match(name):
        raise ValueError(
            f"invalid custom resource name {name!r}: lowercase letters, digits and '_'"
        )
    return name


def _check_custom(values: dict[str, float]) -> dict[str, float]:
    for name, amount in values.items():
        check_custom_name(name)
        if amount < 0:
            raise ValueError(f"custom resource {name}={amount} is negative")
        to_milli(amount, name)
    return values


class GPUDevice(BaseModel):
    """One physical accelerator as an agent advertises it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: NonNegInt
    model: str = Field(min_length=1)
    memory_mb: NonNegInt = 0


class WorkerSpec(BaseModel):
    """What one worker has: the totals advertised, before any reservation.

    Besides the canonical fields it accepts the documents' shorthand
    ``{"cpu_cores": 8, "ram_gb": 32, "labels": {...}}`` and ``"gpus": 2`` for
    anonymous devices; any other key is refused so that typos are caught.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = ""
    cpu: NonNegFloat = 0.0
    ram_mb: NonNegInt = 0
    gpus: tuple[GPUDevice, ...] = ()
    resources: dict[str, float] = Field(default_factory=dict)
    labels: Labels = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        if "cpu_cores" in data:
            data["cpu"] = data.pop("cpu_cores")
        if "ram_gb" in data:
            data["ram_mb"] = round(float(data.pop("ram_gb")) * 1024)
        gpus = data.get("gpus")
        if isinstance(gpus, int) and not isinstance(gpus, bool):
            data["gpus"] = tuple({"index": i, "model": "gpu"} for i in range(gpus))
        allowed = set(cls.model_fields)
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(
                f"unknown worker resource name(s) {unknown}; expected some of "
                f"{sorted(allowed | {'cpu_cores', 'ram_gb'})}"
            )
        return data

    _custom = field_validator("resources")(_check_custom)

    @field_validator("cpu")
    @classmethod
    def _cpu_precision(cls, cpu: float) -> float:
        to_milli(cpu, "cpu")
        return cpu

    @field_validator("gpus")
    @classmethod
    def _unique_indexes(cls, gpus: tuple[GPUDevice, ...]) -> tuple[GPUDevice, ...]:
        indexes = [g.index for g in gpus]
        if len(set(indexes)) != len(indexes):
            raise ValueError(f"GPU device indexes must be unique, got {indexes}")
        return gpus


POLICY_NAMES = ("binpack", "spread", "hybrid")
"""The placement policies a request may name (the coordinator implements each)."""


@cache
def _field_names(model: type[BaseModel]) -> frozenset[str]:
    """Read once per class: validated for every node of every submission."""
    return frozenset(model.model_fields)


class ResourceRequest(BaseModel):
    """What one task needs and where it may run.

    ``gpus`` below 1 is a share of a single device (0.25 = a quarter of one
    GPU); 1 or more must be a whole number of entire devices.  ``gpu_models``
    and ``gpu_mem_mb`` constrain which devices qualify.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = 1
    cpu: NonNegFloat = 1.0
    ram_mb: NonNegInt = 0
    gpus: NonNegFloat = 0.0
    gpu_models: tuple[str, ...] = ()
    gpu_mem_mb: NonNegInt = 0
    resources: dict[str, float] = Field(default_factory=dict)
    required: tuple[LabelSelector, ...] = ()
    preferred: tuple[PreferredLabel, ...] = ()
    policy: str | None = None

    _custom = field_validator("resources")(_check_custom)

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, policy: str | None) -> str | None:
        # Checked here, not at placement: a request travels in submissions, and an
        # unknown name found only by the scheduler would fail every pass over its queue.
        if policy is not None and policy not in POLICY_NAMES:
            raise ValueError(
                f"unknown placement policy {policy!r}; choose one of {sorted(POLICY_NAMES)}"
            )
        return policy

    @model_validator(mode="before")
    @classmethod
    def _name_unknown_fields(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            known = _field_names(cls)
            if data.keys() <= known:
                return data
            unknown = sorted(set(data) - known)
            if unknown:
                raise ValueError(
                    f"unknown resource name(s) {unknown}; built-ins are "
                    f"{sorted(BUILTIN_RESOURCES)}, custom ones go under 'resources'"
                )
        return data

    @model_validator(mode="after")
    def _check_amounts(self) -> Self:
        if self.gpus >= 1 and not float(self.gpus).is_integer():
            raise ValueError(
                f"gpus={self.gpus}: a request of one GPU or more must be a whole number "
                "of devices; below 1 it is a share of a single device"
            )
        to_milli(self.gpus, "gpus")
        to_milli(self.cpu, "cpu")
        if (self.gpu_models or self.gpu_mem_mb) and self.gpus == 0:
            raise ValueError("gpu_models / gpu_mem_mb given but gpus=0")
        return self

    @cached_property
    def key(self) -> str:
        """Canonical text of the request; the pool caches decisions per key."""
        return self.model_dump_json()

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def wants_gpu(self) -> bool:
        return self.gpus > 0

    def describe(self) -> str:
        """Short human form for tables and logs, e.g. ``2 cpu, 4096 MB, 1 gpu [A100|H100]``."""
        parts = [f"{self.cpu:g} cpu"]
        if self.ram_mb:
            parts.append(f"{self.ram_mb} MB")
        if self.gpus:
            models = f" [{'|'.join(self.gpu_models)}]" if self.gpu_models else ""
            parts.append(f"{self.gpus:g} gpu{models}")
        parts += [f"{k}={v:g}" for k, v in sorted(self.resources.items())]
        parts += [str(s) for s in self.required]
        parts += [f"~{p.selector}:{p.weight}" for p in self.preferred]
        return ", ".join(parts)

    def merged(self, **changes: Any) -> ResourceRequest:
        """A copy with some fields replaced, re-validated (stacked decorators use it)."""
        return ResourceRequest.model_validate({**self.model_dump(), **changes})
