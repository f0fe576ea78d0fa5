"""An agent's kept payloads: one fetch per name however many ask, a bound in bytes with
the least recently used out first, and a reference that differs from what was read is
never answered from memory."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from shared.payload_cache import KeptPayloads
from shared.wire.parts import PayloadRef


def ref_of(name: str, data: bytes) -> PayloadRef:
    return PayloadRef(name=f"w.{name}", size=len(data), sha256=hashlib.sha256(data).hexdigest())


class Stream:
    """Stands in for the payload stream: counts fetches, checks as ``PayloadStore`` does."""

    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values
        self.fetched: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def fetch(self, ref: PayloadRef) -> bytes:
        self.fetched.append(ref.name)
        await self.gate.wait()
        data = self.values[ref.name]
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise ValueError("does not match its reference")
        return data


async def test_many_tasks_asking_at_once_and_later_fetch_once() -> None:
    data = b'"' + b"x" * 1000 + b'"'
    stream, kept = Stream({"w.a": data}), KeptPayloads(10_000)
    stream.gate.clear()
    ref = ref_of("a", data)
    readers = [asyncio.create_task(kept.read(ref, stream.fetch)) for _ in range(50)]
    await asyncio.sleep(0)
    stream.gate.set()
    assert set(await asyncio.gather(*readers)) == {data}
    assert await kept.read(ref, stream.fetch) == data
    assert stream.fetched == ["w.a"]
    assert kept.size == len(data)


async def test_the_least_recently_used_goes_first_past_the_bound() -> None:
    a, b, c = (bytes([65 + i]) * 400 for i in range(3))
    stream = Stream({"w.a": a, "w.b": b, "w.c": c})
    kept = KeptPayloads(1000)
    for name, data in (("a", a), ("b", b), ("a", a), ("c", c)):  # a used again: b is oldest
        await kept.read(ref_of(name, data), stream.fetch)
    assert kept.size == 800
    await kept.read(ref_of("a", a), stream.fetch)
    await kept.read(ref_of("b", b), stream.fetch)
    assert stream.fetched == ["w.a", "w.b", "w.c", "w.b"]


async def test_a_value_larger_than_the_bound_is_not_kept() -> None:
    data = b"y" * 2000
    stream, kept = Stream({"w.big": data}), KeptPayloads(1000)
    for _ in range(2):
        assert await kept.read(ref_of("big", data), stream.fetch) == data
    assert (stream.fetched, kept.size) == (["w.big", "w.big"], 0)


async def test_a_reference_that_differs_from_what_was_read_is_checked_again() -> None:
    data = b"real"
    stream, kept = Stream({"w.a": data}), KeptPayloads(1000)
    await kept.read(ref_of("a", data), stream.fetch)
    forged = ref_of("a", b"fake")  # the same name, another digest
    with pytest.raises(ValueError, match="does not match"):
        await kept.read(forged, stream.fetch)
    assert stream.fetched == ["w.a", "w.a"]


def test_an_agent_keeps_256_mib_or_a_sixteenth_of_a_small_hosts_ram() -> None:
    from worker_agent.cli import payload_cache_bytes

    assert payload_cache_bytes(None, 64 * 1024) == 256 << 20
    assert payload_cache_bytes(None, 2048) == 128 << 20
    assert payload_cache_bytes(0, 64 * 1024) == 0
    assert payload_cache_bytes(1024, 2048) == 1024 << 20  # asked for: as asked
