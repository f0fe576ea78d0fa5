"""Why a demand does not fit: one small check per dimension, each with a named reason.

The same checks answer two questions. Against a shape class's totals they
decide feasibility (could it ever run here?); against a worker's free amounts
they explain "busy" (what is missing right now). The order they run in is
listed once, as ``FEASIBILITY`` in ``stack.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from coordinator.placement.shapes import is_unique_label
from shared.capacity import Capacity, Demand
from shared.resources import MILLI


@dataclass(frozen=True, slots=True)
class Rejection:
    """One dimension in which a worker falls short, in words a user can act on."""

    dimension: str
    detail: str


@dataclass(frozen=True, slots=True)
class Amounts:
    """Totals or free amounts of one worker, in the units of Demand."""

    cap: Capacity
    cpu: int
    ram: int
    devices: Sequence[int]
    custom: Mapping[str, int]
    labels: Mapping[str, str]
    per_host: bool = True
    """Whether ``labels`` include per-host labels: a worker's do, a shape class's do not."""

    @classmethod
    def total(cls, cap: Capacity, labels: Mapping[str, str]) -> Amounts:
        """A shape class's totals; its labels leave out per-host ones (see ``shapes.py``)."""
        devices = [MILLI] * len(cap.gpu_models)
        return cls(cap, cap.cpu, cap.ram, devices, dict(cap.custom), labels, per_host=False)


Check = Callable[[Amounts, Demand], Rejection | None]


def _cores(milli: int) -> str:
    return f"{milli / MILLI:g}"


def check_labels(a: Amounts, d: Demand) -> Rejection | None:
    """Required labels; a shape class leaves selectors on per-host labels to the walk."""
    unmet = [
        str(s)
        for s in d.required
        if (a.per_host or not is_unique_label(s.key)) and not s.matches(a.labels)
    ]
    return Rejection("labels", f"requires {', '.join(unmet)}") if unmet else None


def check_cpu(a: Amounts, d: Demand) -> Rejection | None:
    if d.cpu > a.cpu:
        return Rejection("cpu", f"needs {_cores(d.cpu)} cpu, has {_cores(a.cpu)}")
    return None


def check_ram(a: Amounts, d: Demand) -> Rejection | None:
    if d.ram > a.ram:
        return Rejection("ram_mb", f"needs {d.ram} MB, has {a.ram} MB")
    return None


def check_custom(a: Amounts, d: Demand) -> Rejection | None:
    short = [
        f"{k} needs {_cores(v)}, has {_cores(a.custom.get(k, 0))}"
        for k, v in d.custom
        if v > a.custom.get(k, 0)
    ]
    return Rejection("resources", "; ".join(short)) if short else None


def check_gpus(a: Amounts, d: Demand) -> Rejection | None:
    if not d.wants_gpu:
        return None
    if not a.cap.gpu_models:
        return Rejection("gpus", "no GPU devices")
    eligible = [s for s in range(len(a.cap.gpu_models)) if a.cap.device_ok(s, d)]
    if not eligible:
        return _model_rejection(a.cap, d)
    if d.gpu_share:
        best = max(a.devices[s] for s in eligible)
        if best < d.gpu_share:
            return Rejection(
                "gpus", f"needs {d.gpu_share / MILLI:g} of one device, best has {best / MILLI:g}"
            )
        return None
    whole = sum(1 for s in eligible if a.devices[s] == MILLI)
    if whole < d.gpu_whole:
        return Rejection("gpus", f"needs {d.gpu_whole} whole devices, has {whole}")
    return None


def _model_rejection(cap: Capacity, d: Demand) -> Rejection:
    have = ", ".join(f"{m} {mem} MB" for m, mem in zip(cap.gpu_models, cap.gpu_mem, strict=True))
    if d.gpu_models and not set(cap.gpu_models) & d.gpu_models:
        return Rejection("gpu_models", f"needs one of {sorted(d.gpu_models)}, has {have}")
    return Rejection("gpu_mem_mb", f"needs devices with {d.gpu_mem} MB, has {have}")


def rejections(a: Amounts, d: Demand, checks: Sequence[Check]) -> list[Rejection]:
    """Every dimension that falls short, not only the first: users fix all at once."""
    return [r for check in checks if (r := check(a, d)) is not None]
