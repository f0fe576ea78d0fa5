"""Integer capacity bookkeeping shared by the coordinator's pool and the agent's guard.

Both sides must agree to the milli-unit on what a request takes, or the agent
would reject what the pool placed (or accept what it should not). So there is
one ``Demand``, one ``Capacity`` and one ``Ledger``, used by both.

Everything is integer milli-units (CPU, GPU shares, custom) or MB (RAM), so a
release restores exactly what the matching reservation took. Plain ints in
slotted dataclasses: the pool compares and subtracts these on every decision.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Self

from shared.labels import LabelSelector, PreferredLabel
from shared.resources import MILLI, ResourceRequest, WorkerSpec, to_milli

DevicePick = tuple[tuple[int, int], ...]
"""(device slot, milli-share taken) pairs; a slot is a position in the spec's gpus."""


@dataclass(frozen=True, slots=True)
class Demand:
    """A request in exact integer units, computed once per distinct request."""

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

    @property
    def device_share(self) -> int:
        """What it takes from each device it is given, in milli-devices."""
        return self.gpu_share or (MILLI if self.gpu_whole else 0)


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


class Hold(NamedTuple):
    """What one reservation took from one worker (a named tuple: the pool makes one per
    placement, in a third of the time a frozen dataclass takes)."""

    cpu: int
    ram: int
    devices: DevicePick
    custom: tuple[tuple[str, int], ...]


@dataclass(slots=True, eq=False)
class Ledger:
    """One worker's free amounts and the holds taken from them.

    ``live_ram`` (the host's real free memory, when known) further limits RAM;
    the agent leaves it unset and guards reservations only.
    """

    cap: Capacity
    free_cpu: int
    free_ram: int
    free_dev: list[int]
    free_custom: dict[str, int]
    live_ram: int | None = None
    held: dict[Hashable, Hold] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: WorkerSpec, /, **extra: Any) -> Self:
        """Everything free; ``extra`` fills a subclass's own fields."""
        cap = Capacity.of(spec)
        return cls(
            cap=cap,
            free_cpu=cap.cpu,
            free_ram=cap.ram,
            free_dev=[MILLI] * len(cap.gpu_models),
            free_custom=dict(cap.custom),
            **extra,
        )

    def usable_ram(self) -> int:
        """Reserved-free RAM, further limited by what the host really has free."""
        if self.live_ram is None:
            return self.free_ram
        return min(self.free_ram, self.live_ram)

    def pick_devices(self, demand: Demand) -> DevicePick | None:
        """Devices for the demand: best-fit share, or the first whole free ones."""
        if demand.gpu_share:
            best = -1
            for slot, free in enumerate(self.free_dev):
                if (
                    demand.gpu_share <= free
                    and (best < 0 or free < self.free_dev[best])
                    and self.cap.device_ok(slot, demand)
                ):
                    best = slot
            return ((best, demand.gpu_share),) if best >= 0 else None
        if demand.gpu_whole:
            slots = [
                s
                for s, free in enumerate(self.free_dev)
                if free == MILLI and self.cap.device_ok(s, demand)
            ]
            if len(slots) < demand.gpu_whole:
                return None
            return tuple((s, MILLI) for s in slots[: demand.gpu_whole])
        return ()

    def fit(self, demand: Demand) -> DevicePick | None:
        """The devices it would take if the demand fits in free capacity now, else None."""
        if demand.cpu > self.free_cpu or demand.ram > self.free_ram:
            return None
        live = self.live_ram  # usable_ram(), spelt out: the pool asks this of every candidate
        if live is not None and demand.ram > live:
            return None
        for name, amount in demand.custom:
            if amount > self.free_custom.get(name, 0):
                return None
        return self.pick_devices(demand) if demand.gpu_whole or demand.gpu_share else ()

    def shortfall(self, demand: Demand, device_ids: tuple[int, ...]) -> str | None:
        """Why ``demand`` on the named devices does not fit now, or None if it does.

        The agent's check of an assignment: the coordinator chose the devices,
        so they are checked as given rather than picked again.
        """
        short: list[str] = []
        if demand.cpu > self.free_cpu:
            short.append(f"cpu {_units(demand.cpu)} > free {_units(self.free_cpu)}")
        if demand.ram > self.usable_ram():
            short.append(f"ram_mb {demand.ram} > free {self.usable_ram()}")
        for name, amount in demand.custom:
            free = self.free_custom.get(name, 0)
            if amount > free:
                short.append(f"{name} {_units(amount)} > free {_units(free)}")
        picked = self.devices_by_id(demand, device_ids)
        if isinstance(picked, str):
            short.append(picked)
        return "; ".join(short) or None

    def devices_by_id(self, demand: Demand, device_ids: tuple[int, ...]) -> DevicePick | str:
        """The pick for advertised device indexes, or why they cannot take the demand."""
        share = demand.device_share
        wanted = demand.gpu_whole or (1 if demand.gpu_share else 0)
        if len(device_ids) != wanted:
            return f"gpus needs {wanted} device(s), assignment names {list(device_ids)}"
        pick: list[tuple[int, int]] = []
        for device in device_ids:
            if device not in self.cap.gpu_index:
                return f"gpu {device} does not exist here (devices {list(self.cap.gpu_index)})"
            slot = self.cap.gpu_index.index(device)
            if not self.cap.device_ok(slot, demand):
                return f"gpu {device} ({self.cap.gpu_models[slot]}) does not match the request"
            if self.free_dev[slot] < share:
                return f"gpu {device} share {_units(share)} > free {_units(self.free_dev[slot])}"
            pick.append((slot, share))
        return tuple(pick)

    def take(self, key: Hashable, demand: Demand, devices: DevicePick) -> Hold:
        # Hold(...) without the named tuple's Python __new__: half the cost
        hold = _tuple(Hold, (demand.cpu, demand.ram, devices, demand.custom))
        self.free_cpu -= hold.cpu
        self.free_ram -= hold.ram
        if self.live_ram is not None:
            self.live_ram -= hold.ram
        for slot, milli in devices:
            self.free_dev[slot] -= milli
        for name, amount in hold.custom:  # adopted work may hold what is not advertised
            self.free_custom[name] = self.free_custom.get(name, 0) - amount
        self.held[key] = hold
        return hold

    def give_back(self, key: Hashable) -> Hold:
        hold = self.held.pop(key)
        self.free_cpu += hold.cpu
        self.free_ram += hold.ram
        if self.live_ram is not None:
            self.live_ram += hold.ram
        for slot, milli in hold.devices:
            self.free_dev[slot] += milli
        for name, amount in hold.custom:
            self.free_custom[name] += amount
        return hold

    def device_ids(self, devices: DevicePick) -> tuple[int, ...]:
        """Slots to the device indexes the agent advertised (what a task sees)."""
        if not devices:
            return ()
        index = self.cap.gpu_index
        if len(devices) == 1:  # most GPU work: no list made
            return (index[devices[0][0]],)
        return tuple([index[slot] for slot, _ in devices])

    def whole_free_devices(self) -> int:
        return sum(1 for f in self.free_dev if f == MILLI)

    def max_device_share(self) -> int:
        return max(self.free_dev, default=0)


_tuple = tuple.__new__


def _units(milli: int) -> str:
    return f"{milli / MILLI:g}"
