"""What a client believes of a direct answer (``Assignment.reply``): only a success of its
own one-node run's node, from the worker the subject names. A real nats-server, no
coordinator: the answers are published by the test as a peer would."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest

from shared.jetstream import ensure_streams
from shared.wire.protocol import AttemptRef, ErrorInfo, Outcome, encode, join_encoded
from taskiq_fleet import CoordinatorClient, Dag, Node
from taskiq_fleet.client import RunHandle

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[CoordinatorClient]:
    async with await CoordinatorClient.connect(nats_url) as c:
        await ensure_streams(c.nc.jetstream(), c.subjects)
        yield c


def outcome(run_id: str, worker: str, node: str = "only", **fields: object) -> bytes:
    ref = AttemptRef(run_id=run_id, node_id=node, attempt=1)
    base: dict[str, object] = {"status": "succeeded", "return_value": 7}
    msg = Outcome.model_validate(
        {"ref": ref, "worker": worker, "started_at": 1.0, "finished_at": 2.0, **base, **fields}
    )
    return encode(msg)


async def answered(
    client: CoordinatorClient, handle: RunHandle, sends: list[tuple[str, bytes]]
) -> bool:
    """Publish ``sends`` from another connection, then a good answer to a run of its own on
    the same subscription (so applied after them); True if ``handle`` ended by then."""
    marker = await client.submit(Dag(nodes=(Node(id="only", task="noop"),)))
    inbox = client._inbox
    peer = await nats.connect(client.nc.connected_url.geturl())  # type: ignore[union-attr]
    try:
        for subject, data in sends:
            await peer.publish(subject, data)
        await peer.publish(f"{inbox}.w1", outcome(marker.run_id, "w1"))
        await peer.flush()
        await marker.wait(timeout=5)
    finally:
        await peer.close()
    return handle.done


async def test_a_success_from_the_named_worker_ends_a_one_node_run(
    client: CoordinatorClient,
) -> None:
    dag = Dag(nodes=(Node(id="only", task="noop", outputs=("result",)),))
    handle = await client.submit(dag)
    inbox = client._inbox
    assert await answered(client, handle, [(f"{inbox}.w1", outcome(handle.run_id, "w1"))])
    view = await handle.wait(timeout=1)
    assert (view.status, view.outputs, view.node("only").worker) == (
        "succeeded",
        {"result": 7},
        "w1",
    )


async def test_answers_that_cannot_end_the_run_are_ignored(client: CoordinatorClient) -> None:
    one = await client.submit(Dag(nodes=(Node(id="only", task="noop", outputs=("r",)),)))
    two = await client.submit(
        Dag(nodes=(Node(id="only", task="noop"), Node(id="b", task="noop", after=("only",))))
    )
    pair = await client.submit(Dag(nodes=(Node(id="only", task="noop", outputs=("x", "y")),)))
    inbox = client._inbox
    failed = {"status": "failed", "return_value": None, "error": ErrorInfo(type="E", message="m")}
    sends = [
        (f"{inbox}.w2", outcome(one.run_id, "w1")),  # the subject names another worker
        (f"{inbox}.w1", outcome(one.run_id, "w1", **failed)),  # not a success
        (f"{inbox}.w1", outcome(one.run_id, "w1", node="other")),  # not the run's node
        (f"{inbox}.w1", b"{not json"),
        (f"{inbox}.w1", outcome(two.run_id, "w1")),  # the run has another node
        (f"{inbox}.w1", outcome(pair.run_id, "w1")),  # two outputs: the coordinator checks
    ]
    assert not await answered(client, one, sends)
    assert not two.done
    assert not pair.done


async def test_answers_sent_together_end_each_run_they_name(client: CoordinatorClient) -> None:
    """An agent sends the answers of outcomes that ended together as one message; in it,
    one that speaks for another worker is still ignored."""
    dag = Dag(nodes=(Node(id="only", task="noop", outputs=("r",)),))
    one, two, other = [await client.submit(dag) for _ in range(3)]
    inbox = client._inbox
    together = join_encoded(
        [outcome(one.run_id, "w1"), outcome(two.run_id, "w1"), outcome(other.run_id, "w2")]
    )
    assert await answered(client, one, [(f"{inbox}.w1", together)])
    assert two.done
    assert not other.done
