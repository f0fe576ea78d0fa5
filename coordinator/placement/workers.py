"""One worker's live accounting: what is free, what each reservation holds.

Everything is integer milli-units (CPU, GPU shares, custom) or MB (RAM), so a
release restores exactly what the matching reservation took.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from coordinator.placement.demand import Capacity, Demand
from shared.resources import MILLI, WorkerSpec

DevicePick = tuple[tuple[int, int], ...]
"""(device slot, milli-share taken) pairs; a slot is a position in the spec's gpus."""


@dataclass(frozen=True, slots=True)
class Hold:
    """What one reservation took from one worker."""

    cpu: int
    ram: int
    devices: DevicePick
    custom: tuple[tuple[str, int], ...]


@dataclass(slots=True, eq=False)
class WorkerState:
    name: str
    seq: int
    spec: WorkerSpec
    cap: Capacity
    free_cpu: int
    free_ram: int
    free_dev: list[int]
    free_custom: dict[str, int]
    live_ram: int | None = None
    held: dict[Hashable, Hold] = field(default_factory=dict)
    index_keys: list[int] = field(default_factory=list)

    @classmethod
    def create(cls, spec: WorkerSpec, seq: int) -> WorkerState:
        cap = Capacity.of(spec)
        return cls(
            name=spec.name,
            seq=seq,
            spec=spec,
            cap=cap,
            free_cpu=cap.cpu,
            free_ram=cap.ram,
            free_dev=[MILLI] * len(cap.gpu_models),
            free_custom=dict(cap.custom),
        )

    @property
    def labels(self) -> dict[str, str]:
        return self.spec.labels

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
        if demand.cpu > self.free_cpu or demand.ram > self.usable_ram():
            return None
        for name, amount in demand.custom:
            if amount > self.free_custom.get(name, 0):
                return None
        return self.pick_devices(demand)

    def take(self, key: Hashable, demand: Demand, devices: DevicePick) -> Hold:
        hold = Hold(demand.cpu, demand.ram, devices, demand.custom)
        self.free_cpu -= hold.cpu
        self.free_ram -= hold.ram
        if self.live_ram is not None:
            self.live_ram -= hold.ram
        for slot, milli in devices:
            self.free_dev[slot] -= milli
        for name, amount in hold.custom:
            self.free_custom[name] -= amount
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
        return tuple(self.cap.gpu_index[slot] for slot, _ in devices)

    def whole_free_devices(self) -> int:
        return sum(1 for f in self.free_dev if f == MILLI)

    def max_device_share(self) -> int:
        return max(self.free_dev, default=0)
