"""The payload stream against a real nats-server: values come back as stored, and once
stored nobody can replace, roll up, delete or purge them (the deploy roles' side of it is
in test_deploy_nats.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js import api
from nats.js.errors import Error as JetStreamError

from shared.payload_cache import KeptPayloads
from shared.payloads import PayloadError, PayloadStore, ensure_payloads, is_protected, writer_of
from shared.wire.parts import PayloadRef
from shared.wire.subjects import Subjects

S = Subjects()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


async def refused_write(nc: Client, subject: str, headers: dict[str, str] | None = None) -> str:
    """What JetStream answered a write it should refuse; "stored" if it took it."""
    try:
        await nc.jetstream().publish(subject, b'"forged"', headers=headers, timeout=5)
    except (JetStreamError, TimeoutError, nats.errors.Error) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "stored"


CHUNK = (1 << 20) - 64 * 1024
"""A chunk on a server with NATS's default 1 MiB message limit, less room for headers."""


@pytest.mark.parametrize("size", [10, CHUNK, 3 * CHUNK + 17])
async def test_a_value_comes_back_as_stored_in_as_many_chunks_as_it_needs(
    nc: Client, size: int
) -> None:
    """Chunks as large as the server takes: each is a publish, its acknowledgement and a
    read (a 1 MB value was four chunks of 256 KiB)."""
    assert nc.max_payload == 1 << 20
    value = "x" * (size - 2)
    data = json.dumps(value).encode()
    store = PayloadStore(nc, S)
    ref = await store.save(data)
    assert (ref.size, ref.chunks) == (size, -(-size // CHUNK))
    assert ref.name.startswith(f"{writer_of(nc)}.")
    assert await store.load(ref) == value
    info = await nc.jetstream().stream_info(S.payloads_stream)
    assert info.state.messages == ref.chunks


async def test_a_stored_value_cannot_be_replaced_rolled_up_deleted_or_purged(nc: Client) -> None:
    store = PayloadStore(nc, S)
    ref = await store.save(b'"kept"')
    js = nc.jetstream()
    chunk = S.payload_chunk(ref.name, 0)

    assert await refused_write(nc, chunk) != "stored"
    assert await refused_write(nc, chunk, {"Nats-Rollup": "sub"}) != "stored"
    assert await refused_write(nc, S.payload_chunk(ref.name, 1), {"Nats-Rollup": "all"}) != "stored"
    with pytest.raises(JetStreamError):
        await js.delete_msg(S.payloads_stream, 1)
    with pytest.raises(JetStreamError):
        await js.purge_stream(S.payloads_stream)
    with pytest.raises(JetStreamError):
        await js.purge_stream(S.payloads_stream, subject=chunk)

    assert await PayloadStore(nc, S).load(ref) == "kept"


async def test_a_retried_chunk_is_a_duplicate_not_a_refused_second_write(nc: Client) -> None:
    """A write whose ack was lost is sent again with the same id; that must succeed."""
    store = PayloadStore(nc, S)
    ref = await store.save(b'"once"')
    chunk = S.payload_chunk(ref.name, 0)
    ack = await nc.jetstream().publish(chunk, b'"once"', headers={"Nats-Msg-Id": chunk})
    assert ack.duplicate


async def test_a_value_that_is_not_what_its_reference_says_is_refused(nc: Client) -> None:
    store = PayloadStore(nc, S)
    ref = await store.save(b'"real"')
    wrong_digest = ref.model_copy(update={"sha256": "0" * 64})
    with pytest.raises(PayloadError, match="do not match its reference"):
        await store.load(wrong_digest)
    gone = PayloadRef(name=f"{writer_of(nc)}.never-stored", size=3, sha256="0" * 64)
    with pytest.raises(PayloadError, match="is gone"):
        await store.load(gone)


@pytest.mark.parametrize("name", ["a.b.c", "a.*", "a.>", "*.x", "a", ".x", "a b.c"])
def test_a_reference_can_name_only_one_writer_and_key(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        PayloadRef(name=name, size=1, sha256="0" * 64)


async def test_an_unprotected_stream_is_refused_by_writers_and_made_write_once_by_the_coordinator(
    nc: Client,
) -> None:
    """Whoever may create the stream could create it first without the protections."""
    js = nc.jetstream()
    weak = api.StreamConfig(
        name=S.payloads_stream, subjects=[S.all_payloads], allow_rollup_hdrs=True
    )
    await js.add_stream(weak)
    subject = S.payload_chunk("someone.key", 0)
    await js.publish(subject, b'"first"')
    assert await refused_write(nc, subject) == "stored"  # what the protections prevent
    with pytest.raises(PayloadError, match="start the coordinator once"):
        await PayloadStore(nc, S).save(b'"x"')

    await ensure_payloads(js, S, enforce=True)
    config = (await js.stream_info(S.payloads_stream)).config
    assert is_protected(config, S)
    ref = await PayloadStore(nc, S).save(b'"x"')
    assert await refused_write(nc, S.payload_chunk(ref.name, 0)) != "stored"

    loosened = dataclasses.replace(config, deny_delete=False)
    with pytest.raises(JetStreamError):
        await js.update_stream(loosened)


def test_a_reference_that_would_make_a_reader_fetch_too_many_chunks_is_refused() -> None:
    with pytest.raises(ValueError, match="more than 16384"):
        PayloadRef(name="w.k", size=10**12, sha256="0" * 64, chunk_size=1024)
    assert PayloadRef(name="w.k", size=4 << 30, sha256="0" * 64).chunks == 16_384


async def test_an_agents_kept_payloads_read_a_value_from_the_stream_once(
    nc: Client, nats_url: str
) -> None:
    """A value handed to 40 tasks at once and again later is fetched once (one direct get
    of its one chunk: one message sent), as an agent's store keeps it; a store without it
    fetches each time."""
    ref = await PayloadStore(nc, S).save(json.dumps("v" * 300_000).encode())
    reader = await nats.connect(nats_url)  # what it sends is only the reads
    try:
        kept = PayloadStore(reader, S, kept=KeptPayloads(1 << 20))
        sent = reader.stats["out_msgs"]
        values = await asyncio.gather(*(kept.load(ref) for _ in range(40)))
        values.append(await kept.load(ref))
        assert values == ["v" * 300_000] * 41
        assert reader.stats["out_msgs"] - sent == 1
        plain = PayloadStore(reader, S)
        await asyncio.gather(plain.load(ref), plain.load(ref))
        assert reader.stats["out_msgs"] - sent == 3
    finally:
        await reader.close()
