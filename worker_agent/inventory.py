"""What a worker agent advertises: detected capacity, operator overrides, headroom, labels.

Detection is deliberately conservative (cgroup quota and CPU affinity, not the
host's core count; NVML's device list, not a guess) because the pool trusts the
advertisement when it places work. Operators can always state a figure with an
override, and an override is advertised exactly as given: headroom is only taken
off what was detected, so ``--cpus 4`` means four cores are offered.

Parsers of the command-line specs are pure and raise ``ValueError`` with the
offending text; probes of the host are small and injectable so tests can run
against a fake ``/sys`` tree and a fake NVML.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any

from shared.labels import check_label_key
from shared.resources import MILLI, GPUDevice, WorkerSpec, check_custom_name, to_milli
from worker_agent.cgroups import MIB, HostFacts, detect_cpu, detect_ram_mb

_MODEL_TOKEN_RE = re.compile(r"[A-Z]+[0-9]+")
_COUNT_PREFIX_RE = re.compile(r"[-+.\d\s]*")
_DIGITS_RE = re.compile(r"[0-9]+")


# -- GPUs -----------------------------------------------------------------------------------
def short_model(name: str) -> str:
    """The family token placement and labels match on: ``NVIDIA A100-SXM4-40GB`` -> ``A100``.

    Tasks ask for "A100 or H100", not for a board variant, so devices are advertised under
    this token; names without one (``NVIDIA GeForce RTX 4090``) are kept whole.
    """
    for token in re.split(r"[^A-Za-z0-9]+", name):
        if _MODEL_TOKEN_RE.match(token):
            return token
    return name.strip() or "gpu"


@dataclass(frozen=True)
class DetectedGPU:
    """A device as NVML reports it; the full name is kept for operators' notes."""

    index: int
    name: str
    memory_mb: int

    @property
    def model(self) -> str:
        return short_model(self.name)

    def device(self) -> GPUDevice:
        return GPUDevice(index=self.index, model=self.model, memory_mb=self.memory_mb)


GpuQuery = Callable[[], list[DetectedGPU]]


def query_nvml() -> list[DetectedGPU]:
    """Ask NVML for every device; raises whatever pynvml raises (ImportError included)."""
    nvml: Any = importlib.import_module("pynvml")  # optional extra "gpu", untyped
    nvml.nvmlInit()
    try:
        found = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            text = name.decode() if isinstance(name, bytes) else str(name)  # bytes before v11
            memory = int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // MIB
            found.append(DetectedGPU(index, text, memory))
        return found
    finally:
        nvml.nvmlShutdown()


def detect_gpus(query: GpuQuery = query_nvml) -> tuple[tuple[DetectedGPU, ...], str | None]:
    """The devices, or none and the reason: a box without working NVML still runs CPU work."""
    try:
        return tuple(query()), None
    except ImportError:
        return (), "no NVML: pynvml not installed (pip install 'taskiq-fleet[gpu]')"
    except Exception as exc:  # NVMLError and friends: no driver, no device, permissions
        return (), f"no NVML: {type(exc).__name__}: {exc}"


def parse_gpu_spec(spec: str) -> tuple[GPUDevice, ...]:
    """``--gpus``: ``2xL4:24576``, ``A100:40960,A100:40960``, ``1xH100``; ``0`` or empty: none."""
    text = spec.strip()
    if text in ("", "0"):
        return ()
    devices: list[GPUDevice] = []
    for item in text.split(","):
        count, model, memory = _gpu_item(item.strip(), spec)
        for _ in range(count):
            devices.append(GPUDevice(index=len(devices), model=model, memory_mb=memory))
    return tuple(devices)


def _bad(flag: str, text: str, why: str, example: str) -> ValueError:
    return ValueError(f"invalid {flag} {text!r}: {why}; expected e.g. {example}")


def _gpu_item(item: str, spec: str) -> tuple[int, str, int]:
    def bad(why: str) -> ValueError:
        return _bad("--gpus", spec, why, "'2xL4:24576,A100'")

    if not item:
        raise bad("empty item")
    count, device = 1, item
    head, x, rest = item.partition("x")
    if x and _COUNT_PREFIX_RE.fullmatch(head):
        if not _DIGITS_RE.fullmatch(head.strip()) or int(head) < 1:
            raise bad(f"count {head.strip()!r} in {item!r} must be a whole number of at least 1")
        count, device = int(head), rest
    model, colon, memory = (part.strip() for part in device.partition(":"))
    if not model:
        raise bad(f"model missing in {item!r}")
    if colon and not _DIGITS_RE.fullmatch(memory):
        raise bad(f"memory {memory!r} of {model!r} must be a whole number of MB")
    return count, model, int(memory or 0)


# -- headroom -------------------------------------------------------------------------------

_FLAGS = {"cpu": "--cpus", "ram_mb": "--ram-mb"}


@dataclass(frozen=True)
class Share:
    """An amount kept back: absolute (cores or MB) or a percentage of the detected total."""

    amount: float = 0.0
    percent: bool = False

    def of(self, total: int, scale: int) -> int:
        """Held back from ``total`` (in 1/scale units); percentages round up, never short."""
        if self.percent:
            return math.ceil(Fraction(total) * Fraction(str(self.amount)) / 100)
        return round(self.amount * scale)

    def __str__(self) -> str:
        return f"{self.amount:g}%" if self.percent else f"{self.amount:g}"


@dataclass(frozen=True)
class Headroom:
    """Capacity not offered to the pool: room for the OS, the agent and its neighbours."""

    cpu: Share = field(default_factory=Share)
    ram_mb: Share = field(default_factory=Share)


def _headroom_error(text: str, why: str) -> ValueError:
    return _bad("--headroom", text, why, "'cpu=0.5,ram_mb=1024' or '10%'")


def parse_headroom(text: str | None) -> Headroom:
    """``--headroom``: ``cpu=0.5,ram_mb=1024``, ``10%`` (of both), ``cpu=10%,ram_mb=2048``."""
    if text is None or not text.strip():
        return Headroom()
    shares: dict[str, Share] = {}
    for item in text.split(","):
        key, eq, value = (part.strip() for part in item.partition("="))
        if not eq and not key.endswith("%"):
            raise _headroom_error(text, f"{item.strip()!r} is neither dimension=amount nor N%")
        for dim in (key,) if eq else tuple(_FLAGS):
            if dim in shares:
                raise _headroom_error(text, f"{dim} given twice")
            shares[dim] = _share(dim, value if eq else key, text)
    return Headroom(**shares)


def _share(dim: str, value: str, text: str) -> Share:
    if dim not in _FLAGS:
        raise _headroom_error(text, f"unknown dimension {dim!r} (use cpu or ram_mb)")
    number = value.removesuffix("%")
    percent = number != value
    try:
        amount = float(number)
    except ValueError:
        raise _headroom_error(text, f"{dim} amount {value!r} is not a number") from None
    if not math.isfinite(amount) or amount < 0:
        raise _headroom_error(text, f"{dim} amount {value!r} must be a non-negative number")
    if percent and amount >= 100:
        raise _headroom_error(text, f"{dim} {value} would keep everything back; stay below 100%")
    if not percent and dim == "ram_mb" and not amount.is_integer():
        raise _headroom_error(text, f"ram_mb amount {value!r} must be a whole number of MB")
    try:
        to_milli(amount, f"{dim} headroom")
    except ValueError as exc:
        raise _headroom_error(text, str(exc)) from None
    return Share(amount, percent)


def _offer(
    dim: str, detected: float, override: float | None, share: Share, scale: int, notes: list[str]
) -> float:
    """One dimension's advertised amount: the override as given, else detected minus headroom."""
    if override is not None:
        if not math.isfinite(override) or override < 0:
            raise ValueError(f"{_FLAGS[dim]} {override} must be a non-negative number")
        to_milli(override, _FLAGS[dim])
        skipped = f"; headroom {share} not applied" if share.amount else ""
        notes.append(f"{dim} set by {_FLAGS[dim]} to {override:g} (detected {detected:g}){skipped}")
        return override
    total = round(detected * scale)
    held = share.of(total, scale)
    if held and held >= total:
        raise ValueError(
            f"--headroom {dim}={share} leaves nothing of the {detected:g} detected; "
            f"lower it or state the capacity with {_FLAGS[dim]}"
        )
    if held:
        notes.append(f"{dim} headroom {share} keeps back {held / scale:g} of {detected:g}")
    return (total - held) / scale


# -- labels ---------------------------------------------------------------------------------
def parse_labels(text: str | None) -> dict[str, str]:
    """``--labels``: ``zone=eu,tier=spot``; keys follow ``shared.labels`` rules."""
    if text is None or not text.strip():
        return {}
    labels: dict[str, str] = {}
    for item in text.split(","):
        key, eq, value = (part.strip() for part in item.partition("="))
        where = f"invalid --labels {text!r}: item {item.strip()!r}"
        if not eq or not key:
            raise ValueError(f"{where} is not key=value")
        if not value:
            raise ValueError(f"{where} has no value (for a flag write {key}=true)")
        try:
            check_label_key(key)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if key in labels:
            raise ValueError(f"{where}: {key!r} given twice")
        labels[key] = value
    return labels


# -- custom resources -----------------------------------------------------------------------
_BUILT_IN_FLAGS = {
    **dict.fromkeys(("cpu", "cpus"), "--cpus"),
    **dict.fromkeys(("ram", "ram_mb"), "--ram-mb"),
    **dict.fromkeys(("gpu", "gpus", "gpu_mem_mb"), "--gpus"),
}
"""Names a task's custom request could confuse with a built-in dimension; each has its flag."""


def parse_resources(text: str | None) -> dict[str, float]:
    """``--resources``: ``licenses=4,fpga=1``, countable things only some hosts have.

    The pool reserves them like cores (exact milli-units, never over-committed), so an
    amount is a non-negative number with at most three decimals.
    """
    if text is None or not text.strip():
        return {}
    found: dict[str, float] = {}
    for item in text.split(","):
        name, eq, value = (part.strip() for part in item.partition("="))
        _resource_name(text, item.strip(), name, eq, found)
        found[name] = _resource_amount(text, name, value)
    return found


def _resources_error(text: str, why: str) -> ValueError:
    return _bad("--resources", text, why, "'licenses=4,fpga=1'")


def _resource_name(text: str, item: str, name: str, eq: str, found: Mapping[str, float]) -> None:
    if not eq:
        raise _resources_error(text, f"{item!r} is not name=amount")
    if not name:
        raise _resources_error(text, f"{item!r} has no name")
    if name in _BUILT_IN_FLAGS:
        raise _resources_error(text, f"{name!r} is built in; state it with {_BUILT_IN_FLAGS[name]}")
    try:
        check_custom_name(name)
    except ValueError as exc:
        raise _resources_error(text, str(exc)) from None
    if name in found:
        raise _resources_error(text, f"{name} given twice")


def _resource_amount(text: str, name: str, value: str) -> float:
    try:
        amount = float(value)
    except ValueError:
        raise _resources_error(text, f"{name} amount {value!r} is not a number") from None
    if not math.isfinite(amount) or amount < 0:
        raise _resources_error(text, f"{name} amount {value!r} must be a non-negative number")
    try:
        to_milli(amount, name)
    except ValueError as exc:
        raise _resources_error(text, str(exc)) from None
    return amount


def auto_labels(host: HostFacts, gpus: Iterable[GPUDevice]) -> dict[str, str]:
    """Labels every agent gets for free, so selectors like ``arch=x86_64`` need no setup."""
    labels = {"hostname": host.hostname, "os": host.system.lower(), "arch": host.machine}
    models = sorted({short_model(g.model) for g in gpus})
    if models:
        labels["gpu_models"] = ",".join(models)
    return {key: value for key, value in labels.items() if value}


# -- detection ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Totals:
    """The host's capacity as detected: cgroup-aware, before overrides and headroom."""

    cpu: float
    ram_mb: int
    gpus: tuple[DetectedGPU, ...] = ()


@dataclass(frozen=True)
class Inventory:
    """Everything the agent decided about its capacity, and why, for the startup log."""

    detected: Totals
    overridden: frozenset[str]
    headroom: Headroom
    spec: WorkerSpec
    notes: tuple[str, ...]


def _gpu_note(found: tuple[DetectedGPU, ...]) -> str:
    listed = "; ".join(f"{g.index}: {g.name} ({g.memory_mb} MB)" for g in found)
    return f"NVML found {len(found)} GPU(s){': ' + listed if found else ''}"


_NO_LABELS: Mapping[str, str] = MappingProxyType({})


def detect(
    root: Path = Path("/"),
    *,
    cpus: float | None = None,
    ram_mb: int | None = None,
    gpus: str | None = None,
    headroom: str | None = None,
    labels: Mapping[str, str] = _NO_LABELS,
    resources: str | None = None,
    name: str | None = None,
    host: HostFacts | None = None,
    gpu_query: GpuQuery = query_nvml,
) -> Inventory:
    """The agent's advertisement. Specs are parsed before probing so typos fail fast."""
    room = parse_headroom(headroom)
    custom = parse_resources(resources)
    gpu_override = None if gpus is None else parse_gpu_spec(gpus)
    host = host or HostFacts.current()
    notes: list[str] = []
    found, reason = detect_gpus(gpu_query)
    detected = Totals(
        detect_cpu(root, host.cpus, notes), detect_ram_mb(root, host.ram_bytes, notes), found
    )
    notes.append(reason or _gpu_note(found))
    devices = tuple(g.device() for g in found) if gpu_override is None else gpu_override
    if gpu_override is not None:
        notes.append(f"gpus set by --gpus to {len(devices)} device(s) (detected {len(found)})")
    given = {"cpu": cpus, "ram_mb": ram_mb, "gpus": gpus}
    spec = WorkerSpec(
        name=name or host.hostname,
        cpu=_offer("cpu", detected.cpu, cpus, room.cpu, MILLI, notes),
        ram_mb=int(_offer("ram_mb", detected.ram_mb, ram_mb, room.ram_mb, 1, notes)),
        gpus=devices,
        resources=custom,
        labels={**auto_labels(host, devices), **labels},
    )
    overridden = frozenset(dim for dim, value in given.items() if value is not None)
    return Inventory(detected, overridden, room, spec, tuple(notes))
