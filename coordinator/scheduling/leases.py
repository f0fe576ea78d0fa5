"""Worker leases: attempts queued on a worker behind one reservation, in Ray's manner.

When every worker is busy, waiting for one to free up costs each queued node a whole
trip through the coordinator (outcome stored, applied, next assignment sent) before its
agent may start it. Instead, a reservation held on a worker for a task shape (one
request, one task) is a *lease*: up to ``depth`` attempts of that shape are sent to the
worker at once, and the agent runs them one after another under that one reservation,
so the next starts as soon as the last ends. The reservation (keyed in the pool by the
attempt that opened the lease) is released when the last member has ended, on both
sides. Capacity is never counted twice: members share one reservation and run one at a
time.

How deep a lease goes depends on how long its shape's attempts run: enough queued work to
cover a trip through the coordinator (``WINDOW``), so the agent never waits for the next
one, and not much more, so that work does not sit behind a busy worker while another
frees up. Tasks of a fraction of a millisecond fill the configured depth; tasks of 20 ms
and more get two (one running, one waiting); a shape not seen to end yet gets
``START_DEPTH``. The configured depth bounds it.

A lease is topped up only when its shape cannot be placed anywhere (the pool said busy),
so pipelining never keeps work from an idle worker; the scheduler stops topping up for the
rest of a pass once a group has been busy (``Scheduler.schedule``). Only requests without
GPUs are leased: a device that disappears takes its reservation with it, and a lease's
members would not all be told. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from shared.resources import ResourceRequest
from shared.wire.protocol import AttemptRef

Shape = tuple[ResourceRequest, str]
"""(request, task name): what a lease may run."""


@dataclass(eq=False, slots=True)
class Lease:
    key: AttemptRef
    """The pool's reservation key: the attempt that opened the lease."""
    worker: str
    shape: Shape
    members: set[AttemptRef] = field(default_factory=set)
    """Attempts sent under it that have not ended (running, or queued on the agent)."""
    closed: bool = False
    """Its worker drains or was lost: no new member."""


WINDOW = 0.02
"""Seconds of queued work a lease aims to hold: a few trips through the coordinator."""
START_DEPTH = 4
"""The depth of a shape none of whose attempts has ended yet."""
LEARN = 0.2
"""Weight of the newest duration in a shape's running mean."""
KNOWN_SHAPES = 4096
"""Shapes whose durations are kept, the longest unseen forgotten first: a peer that submits
ever new request shapes must not grow the coordinator's memory."""


class Leases:
    def __init__(self, depth: int = 1) -> None:
        self.depth = depth
        """The most members a lease may hold (the coordinator's ``--pipeline-depth``)."""
        self._took: OrderedDict[Shape, float] = OrderedDict()
        """Per shape, the running mean of how long its leased attempts ran (seconds)."""
        self._of: dict[AttemptRef, Lease] = {}
        """Each member's lease."""
        self._by_key: dict[AttemptRef, Lease] = {}
        self._room: dict[Shape, dict[AttemptRef, Lease]] = {}
        """Leases that may take another member, oldest top-up first."""

    def eligible(self, request: ResourceRequest) -> bool:
        return self.depth > 1 and request.gpus == 0

    def open(self, ref: AttemptRef, worker: str, shape: Shape) -> Lease:
        """A fresh placement of ``ref`` (reserved in the pool under ``ref``) opens a lease."""
        lease = Lease(ref, worker, shape, {ref})
        self._of[ref] = self._by_key[ref] = lease
        self._room.setdefault(shape, {})[ref] = lease
        return lease

    def depth_of(self, shape: Shape) -> int:
        took = self._took.get(shape)
        if took is None:
            return min(self.depth, START_DEPTH)
        wanted = 1 + math.ceil(WINDOW / max(took, 1e-6))
        return max(min(2, self.depth), min(self.depth, wanted))

    def observe(self, ref: AttemptRef, seconds: float) -> None:
        """``ref`` ran ``seconds`` (its agent's clock); counts if it ran under a lease."""
        lease = self._of.get(ref)
        if lease is None:
            return
        seconds = max(0.0, seconds)
        took = self._took.pop(lease.shape, None)
        self._took[lease.shape] = seconds if took is None else took + LEARN * (seconds - took)
        if len(self._took) > KNOWN_SHAPES:
            self._took.popitem(last=False)

    def room(self, shape: Shape) -> Lease | None:
        """A lease of ``shape`` that may take another member."""
        leases = self._room.get(shape)
        if not leases:
            return None
        depth = self.depth_of(shape)
        while leases:  # the first, unless the depth fell since it was put here
            key, lease = next(iter(leases.items()))
            if len(lease.members) < depth:
                return lease
            del leases[key]
        del self._room[shape]
        return None

    def join(self, lease: Lease, ref: AttemptRef) -> None:
        lease.members.add(ref)
        self._of[ref] = lease
        leases = self._room.get(lease.shape, {})
        leases.pop(lease.key, None)
        if len(lease.members) < self.depth_of(lease.shape):
            leases[lease.key] = lease  # to the back: members spread over the leases

    def lease_of(self, ref: AttemptRef) -> Lease | None:
        return self._of.get(ref)

    def leave(self, ref: AttemptRef) -> AttemptRef | None:
        """``ref`` ended (on its agent, or in the books); the reservation key to release when
        it was its lease's last member, else None (also for an attempt of no lease)."""
        lease = self._of.pop(ref, None)
        if lease is None:
            return None
        lease.members.discard(ref)
        if lease.members:
            if not lease.closed and len(lease.members) < self.depth_of(lease.shape):
                room = self._room.setdefault(lease.shape, {})
                if lease.key not in room:
                    room[lease.key] = lease  # room again
            return None
        self._by_key.pop(lease.key, None)
        leases = self._room.get(lease.shape)
        if leases is not None:
            leases.pop(lease.key, None)
            if not leases:
                del self._room[lease.shape]
        return lease.key

    def close_worker(self, worker: str) -> None:
        """The worker drains or is lost: its leases take no new member (those sent end as
        their attempts do)."""
        for lease in self._by_key.values():
            if lease.worker == worker:
                lease.closed = True
                leases = self._room.get(lease.shape)
                if leases is not None:
                    leases.pop(lease.key, None)
                    if not leases:
                        del self._room[lease.shape]

    def held(self, key: AttemptRef) -> Lease | None:
        """The open lease whose reservation is keyed ``key``."""
        return self._by_key.get(key)

    def __iter__(self) -> Iterator[Lease]:
        return iter(self._by_key.values())
