"""The agent's own admission check: defence in depth against a confused coordinator.

The coordinator's pool should never send more than an agent has, but two
coordinators during a failover, a stale pool after a restart, or a bug would
otherwise overcommit a host silently. The agent keeps its own ledger with the
same integer arithmetic as the pool (``shared.capacity``) and refuses, with the
reason, anything that does not fit in what is left. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.capacity import Demand, Ledger
from shared.resources import MILLI, ResourceRequest, WorkerSpec
from shared.wire.protocol import Assignment, AttemptRef, RejectCode, Reserved


@dataclass(frozen=True, slots=True)
class Refusal:
    code: RejectCode
    reason: str


class CapacityGuard:
    """Holds one reservation per admitted attempt until ``release``."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.draining = False
        self._ledger = Ledger.of(spec)
        self._demands: dict[ResourceRequest, Demand] = {}

    def holds(self, ref: AttemptRef) -> bool:
        return ref in self._ledger.held

    def admit(self, assignment: Assignment, key: AttemptRef | None = None) -> Refusal | None:
        """Reserve what the assignment asks for, under ``key`` (its attempt, or the lease it
        opens), or say why not; nothing is taken on refusal."""
        key = key or assignment.ref
        if self.draining:
            return Refusal("draining", "the agent is draining and takes no new work")
        if self.holds(key):
            raise ValueError(f"attempt {key.key} is already admitted")
        request = assignment.request
        unmatched = [str(s) for s in request.required if not s.matches(self.spec.labels)]
        if unmatched:
            return Refusal("labels", f"labels do not satisfy {', '.join(unmatched)}")
        demand = self._demands.get(request)
        if demand is None:
            demand = self._demands[request] = Demand.of(request)
        short = self._ledger.shortfall(demand, assignment.gpu_devices)
        if short is not None:
            return Refusal("capacity", f"would exceed free capacity: {short}")
        devices = self._ledger.devices_by_id(demand, assignment.gpu_devices)
        assert not isinstance(devices, str)  # shortfall() passed
        self._ledger.take(key, demand, devices)
        return None

    def release(self, ref: AttemptRef) -> bool:
        """False when nothing was held for ``ref`` (already released, or never admitted)."""
        if ref not in self._ledger.held:
            return False
        self._ledger.give_back(ref)
        return True

    def reserved(self) -> Reserved:
        ledger, cap = self._ledger, self._ledger.cap
        return Reserved(
            cpu=(cap.cpu - ledger.free_cpu) / MILLI,
            ram_mb=cap.ram - ledger.free_ram,
            gpus={
                cap.gpu_index[slot]: (MILLI - free) / MILLI
                for slot, free in enumerate(ledger.free_dev)
                if free < MILLI
            },
            resources={
                name: (total - ledger.free_custom[name]) / MILLI
                for name, total in cap.custom
                if ledger.free_custom[name] < total
            },
        )
