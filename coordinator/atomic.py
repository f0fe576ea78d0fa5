"""JetStream's atomic batch publish (nats-server 2.12 and later), which nats-py lacks.

A checkpoint writes the final records of every run that ended since the last one; as KV
puts, each is a publish and an acknowledgement, and the acknowledgements were a fifth of
the messages through nats-server in a burst of kiqs. Published as one atomic batch, the
messages go out without a reply subject and the server answers the last one only, with
how many it stored: all of them, or none and why. A server that does not know batches
stores each message alone and answers the last as a plain publish; that answer names no
batch, so the caller writes them again one by one (the same values: nothing is lost).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import APIError, ServiceUnavailableError

_ID: str = Header.BATCH_ID.value
_SEQUENCE: str = Header.BATCH_SEQUENCE.value
_COMMIT: str = Header.BATCH_COMMIT.value
MOST = 1000
"""The most messages the server takes in one batch."""


class BatchRefused(Exception):
    """The server stored none of the batch (or may not have: no answer in time)."""


async def allow_atomic(js: JetStreamContext, stream: str) -> bool | None:
    """Let ``stream`` take atomic batches; False where the server cannot, None when it
    could not be asked (NATS away: ask again later, rather than go without for good)."""
    try:
        config = (await js.stream_info(stream)).config
        if not config.allow_atomic:
            await js.update_stream(dataclasses.replace(config, allow_atomic=True))
            config = (await js.stream_info(stream)).config
    except ServiceUnavailableError:  # JetStream starting again
        return None
    except APIError:
        return False
    except Exception:
        return None
    return bool(config.allow_atomic)


async def publish_atomic(
    js: JetStreamContext, messages: Sequence[tuple[str, bytes]], timeout: float = 5.0
) -> None:
    """Store ``messages`` (at most ``MOST``) together; ``BatchRefused`` if not."""
    nc: Client = js._nc  # nats-py keeps no public handle on it
    if not 0 < len(messages) <= MOST:
        raise ValueError(f"an atomic batch holds 1 to {MOST} messages, not {len(messages)}")
    batch = uuid.uuid4().hex
    *first, (subject, data) = messages
    for n, (each, body) in enumerate(first, 1):
        await nc.publish(each, body, headers={_ID: batch, _SEQUENCE: str(n)})
    commit = {_ID: batch, _SEQUENCE: str(len(messages)), _COMMIT: "1"}
    try:
        reply = await nc.request(subject, data, timeout=timeout, headers=commit)
        ack = json.loads(reply.data)
    except Exception as exc:
        raise BatchRefused(f"no answer to the batch's commit: {exc!r}") from exc
    if not isinstance(ack, dict) or "error" in ack:
        error = ack.get("error", {}) if isinstance(ack, dict) else {}
        raise BatchRefused(str(error.get("description", ack)))
    if ack.get("batch") != batch or ack.get("count") != len(messages):
        raise BatchRefused(f"not stored as one batch: {ack}")
