"""Chains (``Scheduler._chain``, ``worker_agent/chains.py``): a node that waits for one
other alone is sent under that one's lease before it ends, with the inputs it will take
named; what was chained to an attempt that does not succeed waits for it again, and the
books stay valid throughout."""

from __future__ import annotations

from typing import Any

from shared.wire.protocol import AttemptRef, Continuation, Outcome
from tests.unit.test_scheduler import Cluster, n
from tests.unit.test_worker_leases import sent
from worker_agent.chains import Upstreams, taken


def chain(length: int, **first: Any) -> list[Any]:
    nodes = [n("s0", outputs=("v0",), cpu=1, **first)]
    nodes += [
        n(f"s{i}", inputs={"x": f"v{i - 1}"}, outputs=(f"v{i}",), cpu=1) for i in range(1, length)
    ]
    return nodes


def test_a_chain_is_sent_with_its_first_node_as_deep_as_the_lease_goes() -> None:
    c = Cluster(pipeline=3)
    c.register("w", cpu=1)
    c.submit("r", *chain(5))
    out = sent(c, 1.0)
    assert [a.ref.node_id for _, a in out] == ["s0", "s1", "s2"]
    s0, s1, s2 = (a for _, a in out)
    assert s1.after == Continuation(ref=s0.ref, outputs=("v0",), takes={"x": "v0"})
    assert s2.after is not None
    assert s2.after.ref == s1.ref
    assert s1.lease == s2.lease == s0.ref
    c.succeed(s0, "w", 2.0, value=1)  # one step done: one more is sent, after the last
    (one,) = sent(c, 2.0)
    assert one[1].ref.node_id == "s3"
    assert one[1].after is not None
    assert one[1].after.ref == s2.ref
    c.sched.validate_state()


def test_only_a_node_waiting_for_that_one_alone_with_its_request_and_task_is_chained() -> None:
    c = Cluster(pipeline=4)
    c.register("w", cpu=4)
    c.register("x", cpu=1, tasks=("app:elsewhere",))
    c.submit(
        "r",
        n("a", outputs=("av",), cpu=1),
        n("b", outputs=("bv",), cpu=1),
        n("both", inputs={"x": "av", "y": "bv"}, cpu=1),  # waits for two
        n("c", outputs=("cv",), cpu=1),
        n("bigger", inputs={"x": "cv"}, cpu=2),  # another request
        n("d", outputs=("dv",), cpu=1),
        n("other", inputs={"x": "dv"}, cpu=1, task="app:elsewhere"),  # not on this worker
    )
    assert sorted(a.ref.node_id for _, a in sent(c, 1.0)) == ["a", "b", "c", "d"]


def test_a_run_s_cap_on_nodes_in_flight_bounds_its_chain() -> None:
    c = Cluster(pipeline=8)
    c.register("w", cpu=1)
    c.submit("r", *chain(6), max_parallel=2)
    assert [a.ref.node_id for _, a in sent(c, 1.0)] == ["s0", "s1"]


def test_a_failed_step_takes_what_was_chained_back_to_waiting_and_cancels_it() -> None:
    c = Cluster(pipeline=4)
    c.register("w", cpu=1)
    c.submit("r", *chain(3, retry={"max_retries": 1}))
    s0, s1, s2 = (a for _, a in sent(c, 1.0))
    c.fail(s0, "w", 2.0)
    assert c.status("r") == {"s0": "ready", "s1": "pending", "s2": "pending"}
    d = c.tick(2.0)
    assert sorted(ref.node_id for ref, _ in d.cancel["w"]) == ["s1", "s2"]
    again = [a for batch in d.assign.values() for a in batch]
    # the cancelled ones still hold their places in the lease until their agent says so
    assert [(a.ref.node_id, a.ref.attempt) for a in again] == [("s0", 2), ("s1", 2)]
    c.cancelled(s1, "w", 2.5)  # the first ones end unrun: nothing changes
    c.cancelled(s2, "w", 2.5)
    assert c.status("r") == {"s0": "placed", "s1": "placed", "s2": "pending"}
    c.sched.validate_state()


def test_a_chained_attempt_ended_unrun_is_placed_again_without_counting_a_system_failure() -> None:
    c = Cluster(pipeline=4)
    c.register("w", cpu=1)
    c.submit("r", *chain(2))
    s0, s1 = (a for _, a in sent(c, 1.0))
    c.succeed(s0, "w", 2.0, value=1)
    c.cancelled(s1, "w", 2.0)  # its agent no longer had s0's value
    state = c.sched.runs["r"].nodes["s1"]
    assert (state.status, state.system_retries) == ("ready", 0)
    (again,) = [a for _, a in sent(c, 2.0)]
    assert again.after is None
    assert again.kwargs == {"x": 1}


def test_a_lost_worker_s_chain_waits_for_its_first_step_again() -> None:
    c = Cluster(pipeline=4, heartbeat_misses=3)
    c.register("w", cpu=1, interval=1.0)
    c.submit("r", *chain(3))
    sent(c, 0.5)
    c.sched.worker_left("w", "gone", 1.0)
    assert c.status("r") == {"s0": "ready", "s1": "pending", "s2": "pending"}
    assert c.reserved_keys() == set()
    c.sched.validate_state()


def outcome(ref: AttemptRef, status: str, value: Any = None) -> Outcome:
    error = None if status == "succeeded" else {"type": "E", "message": "boom"}
    return Outcome.model_validate(
        {
            "ref": ref,
            "worker": "w",
            "status": status,
            "return_value": value,
            "error": error,
            "started_at": 1.0,
            "finished_at": 2.0,
        }
    )


def test_the_agent_gives_a_chained_attempt_its_upstream_s_values_once() -> None:
    up = AttemptRef(run_id="r", node_id="a", attempt=1)
    after = Continuation(ref=up, outputs=("left", "right"), takes={"x": "right", "ys.1": "left"})
    kept = Upstreams()
    kept.ended(outcome(up, "succeeded", [1, 2]))
    found = kept.take(after)
    assert isinstance(found, Outcome)
    assert taken(after, found.return_value) == {"x": 2, "ys.1": 1}
    assert "did not end on this worker" in str(kept.take(after))
    assert "declares 2 outputs" in str(taken(after, 3))


def test_the_agent_ends_a_chained_attempt_unrun_when_its_upstream_did_not_succeed() -> None:
    up = AttemptRef(run_id="r", node_id="a", attempt=1)
    kept = Upstreams(kept=2)
    kept.ended(outcome(up, "failed"))
    assert kept.take(Continuation(ref=up)) == "its upstream attempt r.a.1 failed"
    for attempt in (2, 3, 4):
        kept.ended(outcome(up.model_copy(update={"attempt": attempt}), "succeeded"))
    gone = Continuation(ref=up.model_copy(update={"attempt": 2}))
    assert "did not end on this worker" in str(kept.take(gone))  # only the last two kept
