"""User values are bounded in depth wherever they enter, and one bad item never sinks a batch."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from taskiq.exceptions import SendTaskError

from shared.dag import Dag, Node
from shared.resources import ResourceRequest
from shared.wire.batches import decode_apart
from shared.wire.protocol import Assignment, AttemptRef, Outcome, ProtocolError, encode_each
from shared.wire.runs import Refused, Submit, parse_submits
from shared.wire.values import MAX_DEPTH, depth_error
from taskiq_fleet import LocalFleetBroker
from tests.unit.executor_tasks import nested


def test_depth_is_counted_in_lists_and_objects() -> None:
    assert depth_error(1) is None
    assert depth_error(nested(MAX_DEPTH)) is None
    assert depth_error(nested(MAX_DEPTH + 1)) is not None
    value: object = "leaf"
    for i in range(MAX_DEPTH + 1):
        value = {"k": value} if i % 2 else [value]
    assert "nested more than 64 levels" in (depth_error(value) or "")
    assert depth_error(nested(100_000)) is not None  # iterative: no RecursionError


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 200, 5000])
def test_a_node_refuses_a_too_deep_argument_with_a_clear_error(depth: int) -> None:
    with pytest.raises(ValidationError, match="nested more than 64 levels"):
        Node(id="a", task="t", kwargs={"x": nested(depth)})
    with pytest.raises(ValidationError, match="nested more than 64 levels"):
        Node(id="a", task="t", args=(nested(depth),))


def test_a_deep_value_just_inside_the_bound_is_kept() -> None:
    node = Node(id="a", task="t", kwargs={"x": nested(MAX_DEPTH)})
    assert node.kwargs["x"] == nested(MAX_DEPTH)


def raw_submit(run_id: str, depth: int) -> bytes:
    """A submission as a client that skips our models would send it (built as text: the
    deepest ones are past what ``json.dumps`` can encode)."""
    good = Submit(run_id=run_id, dag=Dag(nodes=(Node(id="a", task="t", kwargs={"x": 0}),)))
    deep = b"[" * depth + b"1" + b"]" * depth
    return good.model_dump_json().encode().replace(b'{"x":0}', b'{"x":' + deep + b"}")


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 200, 252])
def test_the_coordinator_refuses_a_deep_submission_alone(depth: int) -> None:
    """In a batch, the deep run is refused with the reason; the other one is kept."""
    items = [raw_submit("deep", depth), raw_submit("fine", 2)]
    batch = b'{"type":"submit_batch","version":1,"items":[' + b",".join(items) + b"]}"
    found = parse_submits(batch)
    refused = [i for i in found if isinstance(i, Refused)]
    kept = [i for i in found if isinstance(i, Submit)]
    assert [r.run_id for r in refused] == ["deep"]
    reason = "nested more than 64 levels" if depth < 100 else "recursion limit exceeded"
    assert reason in refused[0].error
    assert [s.run_id for s in kept] == ["fine"]


def test_json_too_deep_for_the_parser_is_a_protocol_error() -> None:
    data = b'{"type":"submit_batch","items":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ProtocolError):
        parse_submits(data)


def assignment(node: str, **kwargs: object) -> Assignment:
    return Assignment(
        ref=AttemptRef(run_id="r", node_id=node, attempt=1),
        task_name="t",
        kwargs=kwargs,  # type: ignore[arg-type]
        request=ResourceRequest(),
    )


def test_one_bad_assignment_does_not_sink_its_batch() -> None:
    batch = json.loads(encode_each([assignment("a", x=1), assignment("b", x=2)]))
    batch["items"][1]["kwargs"] = {"x": nested(230)}
    good, bad = decode_apart(json.dumps(batch).encode(), Assignment)
    assert [a.ref.node_id for a in good] == ["a"]
    [(ref, error)] = bad
    assert ref == AttemptRef(run_id="r", node_id="b", attempt=1)
    assert "nested more than 64 levels" in str(error)


def test_a_whole_batch_and_garbage() -> None:
    outcome = Outcome(
        ref=AttemptRef(run_id="r", node_id="a", attempt=1),
        worker="w",
        status="succeeded",
        started_at=1.0,
        finished_at=2.0,
    )
    good, _bad = decode_apart(encode_each([outcome]), Outcome)
    assert [o.ref for o in good] == [outcome.ref]
    with pytest.raises(ProtocolError):
        decode_apart(b"not json", Assignment)


async def test_kiq_refuses_a_too_deep_argument_before_anything_is_sent() -> None:
    broker = LocalFleetBroker(workers=[{"name": "w", "cpu": 1, "ram_mb": 512}])

    @broker.task
    async def echo(x: object) -> object:
        return x

    await broker.startup()
    try:
        with pytest.raises(SendTaskError) as caught:
            await echo.kiq(nested(100))
        assert "nested more than 64 levels" in str(caught.value.__cause__)
        task = await echo.kiq(nested(10))
        result = await task.wait_result(timeout=10)
        assert result.return_value == nested(10)
    finally:
        await broker.shutdown()
