"""Stored values an agent read lately, kept in memory by name.

A fan-out hands one large value to hundreds of tasks, and each of them read it whole from
the payload stream: a 1 MB input of a 1,000-wide map was a gigabyte through nats-server
into the one agent that already had it. The stream is write-once (``shared/payloads.py``),
so a name always holds the same bytes, and keeping them is safe; what a reference claims
(size, SHA-256) is compared with what was checked when the bytes were read, and a
reference that differs is read again, and fails its check there. Bytes are kept, not the
decoded value: each task gets its own copy to change as it likes.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from shared.wire.parts import PayloadRef

Fetch = Callable[[PayloadRef], Awaitable[bytes]]


class KeptPayloads:
    """Up to ``limit`` bytes, the least recently used out first; and one read in flight
    per name, however many tasks ask for it at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._kept: OrderedDict[str, tuple[PayloadRef, bytes]] = OrderedDict()
        self._size = 0
        self._reading: dict[str, tuple[PayloadRef, asyncio.Future[bytes]]] = {}

    @property
    def size(self) -> int:
        """Bytes kept now."""
        return self._size

    async def read(self, ref: PayloadRef, fetch: Fetch) -> bytes:
        """``ref``'s bytes, kept or fetched (``fetch`` checks them against ``ref``)."""
        found = self._kept.get(ref.name)
        if found is not None and _same(found[0], ref):
            self._kept.move_to_end(ref.name)
            return found[1]
        reading = self._reading.get(ref.name)
        if reading is None or not _same(reading[0], ref):
            return await self._fetch(ref, fetch)
        return await asyncio.shield(reading[1])

    async def _fetch(self, ref: PayloadRef, fetch: Fetch) -> bytes:
        future = asyncio.ensure_future(fetch(ref))
        self._reading.setdefault(ref.name, (ref, future))
        try:
            data = await asyncio.shield(future)
        finally:
            current = self._reading.get(ref.name)
            if current is not None and current[1] is future:
                del self._reading[ref.name]
        self._keep(ref, data)
        return data

    def _keep(self, ref: PayloadRef, data: bytes) -> None:
        if len(data) > self.limit or ref.name in self._kept:
            return
        self._kept[ref.name] = (ref, data)
        self._size += len(data)
        while self._size > self.limit:
            _, (_, dropped) = self._kept.popitem(last=False)
            self._size -= len(dropped)


def _same(kept: PayloadRef, ref: PayloadRef) -> bool:
    return kept.size == ref.size and kept.sha256 == ref.sha256
