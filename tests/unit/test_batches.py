"""Batching in the scheduler core (``coordinator/scheduling/batches.py``), driven with
explicit times: members of ``batch=True`` tasks from any run (any producer) are grouped,
formed into one batch run at ``size`` or ``timeout``, placed once, and each member ends
with its element; a restarted coordinator maps a stored batch to the same members.
``validate_state`` runs after every step."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.scheduling.batches import Batches, element
from coordinator.scheduling.machine import Scheduler, SchedulerConfig
from shared.dag import Batching, Dag, Node, RunOptions
from shared.resources import ResourceRequest, WorkerSpec
from shared.wire.protocol import Assignment, AttemptRef, ErrorInfo, Outcome, Register
from shared.wire.runs import Refused, RunView, Submit, parse_submits

TASK = "app:scale"
SLOW = 1000.0


def member(item: Any, *rest: Any, size: int = 3, timeout: float = 2.0, **kwargs: Any) -> Node:
    return Node(
        id="task",
        task=TASK,
        args=(item, *rest),
        kwargs=kwargs,
        outputs=("result",),
        request=ResourceRequest(cpu=1),
        batch=Batching(size=size, timeout=timeout),
    )


class Fleet:
    """One scheduler, one 4-CPU worker ``w`` serving ``TASK``; checks after every step."""

    def __init__(self, incarnation: str = "", **config: Any) -> None:
        self.pool = ResourceAwareWorkerPool()
        self.sched = Scheduler(self.pool, SchedulerConfig(**config), incarnation=incarnation)
        self.assigned: list[Assignment] = []
        self.finished: list[str] = []

    def register(self, at: float = 0.0, running: tuple[AttemptRef, ...] = ()) -> None:
        msg = Register(
            spec=WorkerSpec(name="w", cpu=4, ram_mb=4096),
            agent_version="test",
            pid=1,
            started_at=1.0,
            heartbeat_interval=SLOW,
            tasks=(TASK,),
            running=running,
        )
        self.sched.register(msg, at)
        self.step()

    def kiq(self, run_id: str, node: Node, at: float = 0.0, priority: int = 0) -> None:
        options = RunOptions(priority=priority)
        self.sched.submit(Submit(run_id=run_id, dag=Dag(nodes=(node,)), options=options), at)
        self.step()

    def tick(self, at: float) -> list[Assignment]:
        self.sched.tick(at)
        return self.step()

    def step(self) -> list[Assignment]:
        self.sched.validate_state()
        out = self.sched.take()
        new = [a for batch in out.assign.values() for a in batch]
        self.assigned += new
        self.finished += out.finished
        return new

    def outcome(self, a: Assignment, value: Any = None, error: str = "", at: float = 1.0) -> None:
        failed = ErrorInfo(type="RuntimeError", message=error) if error else None
        msg = Outcome(
            ref=a.ref,
            worker="w",
            status="failed" if error else "succeeded",
            return_value=value,
            error=failed,
            started_at=at,
            finished_at=at,
        )
        self.sched.outcome(msg, at)
        self.step()

    def view(self, run_id: str) -> RunView:
        return self.sched.view(run_id)

    def result(self, run_id: str) -> Any:
        view = self.view(run_id)
        assert view.status == "succeeded", view
        return view.outputs["result"]


def test_members_of_different_producers_share_one_batch_placed_once() -> None:
    f = Fleet()
    f.register()
    f.kiq("a1", member(1, 10))
    f.kiq("b1", member(2, 10))  # another producer's run, same task and other arguments
    assert f.tick(0.5) == []  # two of three: waits
    f.kiq("a2", member(3, 10), at=0.6)
    (batch,) = f.tick(0.6)
    assert batch.args == ([1, 2, 3], 10)
    assert batch.ref.run_id == "batch-1"
    assert len(f.pool.reservations()) == 1  # reserved once for three members
    assert f.view("a1").nodes[0].batch == "batch-1"
    assert f.view("b1").nodes[0].reason == "in batch batch-1, item 2 of 3"
    f.outcome(batch, [10, 20, 30])
    assert [f.result(r) for r in ("a1", "b1", "a2")] == [10, 20, 30]
    assert sorted(f.finished) == ["a1", "a2", "b1", "batch-1"]
    assert f.view("b1").nodes[0].worker == "w"
    assert f.pool.reservations() == []


def test_a_group_below_size_is_formed_at_its_timeout_after_the_first_member() -> None:
    f = Fleet()
    f.register()
    f.kiq("a", member("x", size=5, timeout=2.0), at=10.0)
    f.kiq("b", member("y", size=5, timeout=2.0), at=11.5)
    assert f.sched.batch_deadline() == 12.0
    assert f.tick(11.99) == []
    (batch,) = f.tick(12.0)
    assert batch.args == (["x", "y"],)
    f.outcome(batch, True)  # not a list: every member gets the whole result
    assert f.result("a") is True
    assert f.result("b") is True


def test_the_hang_script_six_full_batches_at_once_and_the_rest_at_the_timeout() -> None:
    f = Fleet()
    msg = Register(
        spec=WorkerSpec(name="w", cpu=64, ram_mb=4096),
        agent_version="test",
        pid=1,
        started_at=1.0,
        heartbeat_interval=SLOW,
        tasks=(TASK,),
    )
    f.sched.register(msg, 0.0)
    for i in range(400):
        node = member(i, size=60, timeout=3.0)
        f.sched.submit(Submit(run_id=f"k{i}", dag=Dag(nodes=(node,))), 0.1)
    full = f.tick(0.1)
    assert [len(a.args[0]) for a in full] == [60] * 6  # type: ignore[arg-type]
    assert f.tick(3.0) == []
    (last,) = f.tick(3.1)
    assert last.args[0] == list(range(360, 400))
    for a in [*full, last]:
        f.outcome(a, True)
    assert len([r for r in f.finished if r.startswith("k")]) == 400


def test_groups_are_per_other_arguments_keyword_item_and_priority() -> None:
    f = Fleet()
    f.register()
    f.kiq("a", member(1, factor=10, size=2))
    f.kiq("b", member(2, factor=3, size=2))
    f.kiq("c", member(3, factor=10, size=2), priority=5)
    named = Node(
        id="task",
        task=TASK,
        kwargs={"items": 4, "factor": 10},
        outputs=("result",),
        request=ResourceRequest(cpu=1),
        batch=Batching(size=2, timeout=2.0, item="items"),
    )
    f.kiq("d", named)
    f.kiq("e", named.model_copy(update={"kwargs": {"items": 5, "factor": 10}}))
    (formed,) = f.tick(0.0)
    assert formed.kwargs == {"factor": 10, "items": [4, 5]}
    assert formed.args == ()
    assert len(f.tick(2.0)) == 3  # a, b and c each alone, at their timeout


def test_a_failed_batch_fails_every_member_with_its_error() -> None:
    f = Fleet()
    f.register()
    for i in range(3):
        f.kiq(f"m{i}", member(i))
    (batch,) = f.tick(0.0)
    f.outcome(batch, error="bad batch [0, 1, 2]")
    for i in range(3):
        view = f.view(f"m{i}")
        assert view.status == "failed"
        error = view.nodes[0].error
        assert error is not None
        assert (error.type, error.message) == ("RuntimeError", "bad batch [0, 1, 2]")


def test_a_member_cancelled_while_waiting_leaves_its_group() -> None:
    f = Fleet()
    f.register()
    f.kiq("a", member(1))
    f.kiq("b", member(2))
    assert f.sched.cancel_run("a", "user", 0.5)
    f.step()
    f.kiq("c", member(3), at=0.6)
    f.kiq("d", member(4), at=0.6)
    (batch,) = f.tick(0.7)
    assert batch.args == ([2, 3, 4],)


def test_a_batch_whose_members_all_ended_is_cancelled_on_its_worker() -> None:
    f = Fleet()
    f.register()
    for i in range(3):
        f.kiq(f"m{i}", member(i))
    (batch,) = f.tick(0.0)
    f.sched.cancel_run("m0", "user", 0.5)
    f.step()
    assert f.view("batch-1").status == "running"  # two members still wait for it
    f.sched.cancel_run("m1", "user", 0.5)
    f.sched.cancel_run("m2", "user", 0.5)
    out = f.sched.take()
    assert f.view("batch-1").status == "cancelled"
    assert [ref for ref, _ in out.cancel["w"]] == [batch.ref]
    f.sched.validate_state()


def test_a_cancelled_batch_cancels_its_members() -> None:
    f = Fleet()
    f.register()
    for i in range(3):
        f.kiq(f"m{i}", member(i))
    f.tick(0.0)
    f.sched.cancel_run("batch-1", "operator", 1.0)
    f.step()
    assert [f.view(f"m{i}").status for i in range(3)] == ["cancelled"] * 3
    assert "batch batch-1 cancelled: operator" in f.view("m0").error


def test_a_member_never_runs_twice_when_its_run_times_out_in_a_batch() -> None:
    f = Fleet()
    f.register()
    f.kiq("a", member(1))
    f.sched.submit(
        Submit(run_id="b", dag=Dag(nodes=(member(2),)), options=RunOptions(timeout=1)), 0.0
    )
    f.kiq("c", member(3))
    (batch,) = f.tick(0.0)
    f.tick(1.5)  # b's run times out while its batch runs
    assert f.view("b").status == "failed"
    f.outcome(batch, [1, 2, 3], at=2.0)
    assert (f.result("a"), f.result("c")) == (1, 3)
    assert f.view("b").status == "failed"


def stored(f: Fleet, *run_ids: str) -> list[tuple[Submit, RunView]]:
    """What the coordinator's store holds of these runs now."""
    return [(f.sched.runs[r].submit, f.view(r)) for r in run_ids]


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch-first", "members-first"])
def test_a_restarted_coordinator_maps_the_running_batch_to_the_same_members(
    batch_first: bool,
) -> None:
    old = Fleet(incarnation="old")
    old.register()
    for i in range(3):
        old.kiq(f"m{i}", member(i))
    (batch,) = old.tick(0.0)
    records = stored(old, "batch-old-1", "m0", "m1")  # m2's record was not written yet
    if not batch_first:
        records.reverse()
    new = Fleet(incarnation="new")
    new.sched.start(10.0)
    for submit, view in records:
        new.sched.restore(submit, view, 10.0, grace=10.0)
    new.step()
    new.kiq("m1", member(1), at=10.0)  # delivered again: known, still one member
    new.kiq("m2", member(2), at=10.0)  # delivered again: back in its batch
    assert new.view("m2").nodes[0].batch == "batch-old-1"
    new.register(at=10.1, running=(batch.ref,))  # the agent still runs the batch
    assert new.tick(20.0) == []  # nothing is grouped or placed again
    new.outcome(batch, [0, 10, 20], at=21.0)
    assert [new.result(f"m{i}") for i in range(3)] == [0, 10, 20]
    assert sorted(new.finished) == ["batch-old-1", "m0", "m1", "m2"]
    assert new.assigned == []


def test_members_restored_without_their_batch_are_grouped_again() -> None:
    old = Fleet(incarnation="old")
    old.register()
    for i in range(3):
        old.kiq(f"m{i}", member(i))
    (lost,) = old.tick(0.0)
    records = stored(old, "m0", "m1", "m2")  # the batch run was never written
    new = Fleet(incarnation="new")
    new.sched.start(10.0)
    for submit, view in records:
        new.sched.restore(submit, view, 10.0, grace=10.0)
    new.register(at=10.0, running=(lost.ref,))
    (again,) = new.tick(20.0)
    assert again.ref.run_id == "batch-new-1"
    assert again.args == ([0, 1, 2],)
    new.outcome(lost, [7, 7, 7], at=21.0)  # the old attempt's outcome maps to nobody
    assert all(new.view(f"m{i}").status == "running" for i in range(3))
    new.outcome(again, [0, 10, 20], at=22.0)
    assert [new.result(f"m{i}") for i in range(3)] == [0, 10, 20]


def test_flush_forms_every_group_now() -> None:
    f = Fleet()
    f.register()
    f.kiq("a", member(1, size=10, timeout=60))
    f.sched.flush_batches(0.0)
    (batch,) = f.tick(0.0)
    assert batch.args == ([1],)


def test_element() -> None:
    assert element([10, 20, 30], 1, 3) == 20
    assert element([10, 20], 1, 3) == [10, 20]
    assert element(True, 2, 3) is True


def test_batches_alone_keep_no_member_of_another_node() -> None:
    batches = Batches()
    f = Fleet()
    f.register()
    f.sched.submit(Submit(run_id="plain", dag=Dag(nodes=(Node(id="n", task=TASK),))), 0.0)
    assert not batches.hold(f.sched.runs["plain"].nodes["n"], 0.0)


# -- the wire --------------------------------------------------------------------------------


def test_a_batch_member_node_is_checked_where_it_is_built() -> None:
    with pytest.raises(ValidationError, match="needs its item as its first arg"):
        Node(id="n", task=TASK, batch=Batching())
    with pytest.raises(ValidationError, match="has no kwarg 'items'"):
        Node(id="n", task=TASK, args=(1,), batch=Batching(item="items"))
    with pytest.raises(ValidationError, match="takes values, not inputs"):
        Node(id="n", task=TASK, args=(1,), inputs={"x": "y"}, batch=Batching())
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Batching(size=0)


def test_a_client_may_not_submit_a_batch_run() -> None:
    submit = Submit(run_id="forged", dag=Dag(nodes=(Node(id="n", task=TASK),)), members=("x",))
    (refused,) = parse_submits(json.dumps(submit.model_dump(mode="json")).encode())
    assert isinstance(refused, Refused)
    assert refused.run_id == "forged"
    assert "'members' is set by the coordinator" in refused.error
