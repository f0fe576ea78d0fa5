"""The transition tables: an impossible status change is refused with the node's history,
every entry of the node table is a move the scheduler really makes (and every move it
makes is in the table), and ``validate_state`` notices books corrupted behind its back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.scheduling.machine import Scheduler, SchedulerConfig
from coordinator.scheduling.state import NodeState
from coordinator.scheduling.transitions import HISTORY, NODE_TRANSITIONS, InvalidTransition
from shared.dag import Batching, Dag, Node, RetryPolicy, RunOptions
from shared.resources import ResourceRequest, WorkerSpec
from shared.wire.protocol import (
    AttemptRef,
    ErrorInfo,
    Heartbeat,
    Outcome,
    Register,
    Reject,
)
from shared.wire.runs import NodeStatus, NodeView, RunView, Submit

TASK = "app:work"
SLOW = 1000.0


def node(node_id: str, cpu: float = 1.0, **fields: Any) -> Node:
    return Node(id=node_id, task=TASK, request=ResourceRequest(cpu=cpu), **fields)


class Fleet:
    """A scheduler with one 2-CPU worker ``w``; every event is followed by validate_state."""

    def __init__(self, **config: Any) -> None:
        self.pool = ResourceAwareWorkerPool()
        self.sched = Scheduler(self.pool, SchedulerConfig(**config), rand=lambda: 0.5)
        self.moves: list[tuple[NodeStatus, NodeStatus]] = []
        move = self.sched._move

        def spy(state: NodeState, to: NodeStatus, why: str, now: float, **kw: bool) -> None:
            self.moves.append((state.status, to))
            move(state, to, why, now, **kw)

        self.sched._move = spy  # type: ignore[method-assign]
        self.seq = 0

    def register(self, running: tuple[AttemptRef, ...] = (), cpu: float = 2) -> None:
        spec = WorkerSpec(name="w", cpu=cpu, ram_mb=4096)
        msg = Register(
            spec=spec,
            agent_version="test",
            pid=1,
            started_at=1.0,
            heartbeat_interval=SLOW,
            tasks=(TASK,),
            running=running,
        )
        self.sched.register(msg, 0.0)
        self.sched.validate_state()

    def beat(self, running: tuple[AttemptRef, ...], at: float = 1.0) -> None:
        self.seq += 1
        msg = Heartbeat(
            worker="w",
            started_at=1.0,
            seq=self.seq,
            interval=SLOW,
            capacity=WorkerSpec(name="w", cpu=2, ram_mb=4096),
            cpu_percent=0.0,
            available_ram_mb=4096,
            running=running,
        )
        self.sched.heartbeat(msg, at)
        self.sched.validate_state()

    def submit(self, *nodes: Node, run_id: str = "r1", **options: Any) -> None:
        dag = Dag(nodes=nodes)
        self.sched.submit(Submit(run_id=run_id, dag=dag, options=RunOptions(**options)), 0.0)
        self.sched.validate_state()

    def tick(self, at: float = 0.0) -> dict[str, AttemptRef]:
        self.sched.tick(at)
        self.sched.validate_state()
        out = self.sched.take()
        return {a.ref.node_id: a.ref for batch in out.assign.values() for a in batch}

    def outcome(self, ref: AttemptRef, status: str, at: float = 1.0) -> None:
        error = None if status == "succeeded" else ErrorInfo(type="Boom", message="boom")
        msg = Outcome(
            ref=ref,
            worker="w",
            status=status,
            error=error,
            started_at=at,
            finished_at=at,
        )
        self.sched.outcome(msg, at)
        self.sched.validate_state()

    def accept(self, ref: AttemptRef) -> None:
        self.sched.accepted(ref, 1.0)
        self.sched.validate_state()

    def state(self, node_id: str, run_id: str = "r1") -> NodeState:
        return self.sched.runs[run_id].nodes[node_id]


# -- an impossible transition --------------------------------------------------------------


def test_an_impossible_transition_names_the_node_and_shows_its_history() -> None:
    f = Fleet()
    f.register()
    f.submit(node("a"))
    ref = f.tick()["a"]
    f.accept(ref)
    f.outcome(ref, "succeeded")
    a = f.state("a")
    with pytest.raises(InvalidTransition) as caught:
        f.sched._move(a, "running", "a late report", 2.0)
    err = caught.value
    text = str(err)
    assert "node r1/a" in text
    assert "succeeded -> running is not a legal transition (a late report)" in text
    assert [(s.old, s.new) for s in err.steps] == [
        ("pending", "ready"),
        ("ready", "placed"),
        ("placed", "running"),
        ("running", "succeeded"),
    ]
    assert "recent history:" in text
    assert "placed -> running (accepted)" in text
    assert a.status == "succeeded", "a refused transition changes nothing"


def test_a_node_history_is_bounded() -> None:
    f = Fleet(max_rejects=100)
    f.register()
    f.submit(node("a"))
    for _ in range(HISTORY):
        ref = f.tick()["a"]
        f.sched.rejected(Reject(ref=ref, worker="w", code="capacity", reason="full"), 0.0)
    assert len(f.state("a").history) == HISTORY


def test_a_restore_only_transition_is_refused_outside_a_restore() -> None:
    f = Fleet()
    f.register()
    f.submit(node("a", outputs=("av",)), node("b", inputs={"v": "av"}))
    with pytest.raises(InvalidTransition, match="pending -> succeeded"):
        f.sched._move(f.state("b"), "succeeded", "a bug", 0.0)


def test_ending_a_run_twice_is_an_invalid_run_transition() -> None:
    f = Fleet()
    f.register()
    f.submit(node("a"))
    assert f.sched.cancel_run("r1", "test", 0.0)
    with pytest.raises(InvalidTransition, match="run r1: cancelled -> failed"):
        f.sched._end_run(f.sched.runs["r1"], "failed", "again", 1.0)


# -- the table is the moves the scheduler makes ---------------------------------------------


def happy_path(f: Fleet) -> None:
    """pending->ready->placed->running->succeeded; a follower succeeds unaccepted."""
    f.register()
    f.submit(node("a", outputs=("av",)), node("b", inputs={"v": "av"}))
    a = f.tick()["a"]
    f.accept(a)
    f.outcome(a, "succeeded")
    f.outcome(f.tick()["b"], "succeeded")


def failures(f: Fleet) -> None:
    """Retries (running->ready, placed->ready by a reject), failures and skipped followers."""
    f.register()
    retry = RetryPolicy(max_retries=1)
    f.submit(node("a", outputs=("av",), retry=retry), node("b", inputs={"v": "av"}))
    ref = f.tick()["a"]
    f.accept(ref)
    f.outcome(ref, "failed")  # running -> ready (retried)
    ref = f.tick(5.0)["a"]
    f.sched.rejected(Reject(ref=ref, worker="w", code="capacity", reason="full"), 5.0)
    ref = f.tick(5.0)["a"]
    f.accept(ref)
    f.outcome(ref, "failed")  # running -> failed; b pending -> skipped
    f.submit(node("c"), run_id="r2")
    f.outcome(f.tick()["c"], "failed")  # placed -> failed


def cancels(f: Fleet) -> None:
    """A cancelled run: running, placed, ready and pending nodes are all cancelled."""
    f.register()
    f.submit(
        node("a", outputs=("av",)),
        node("b"),
        node("big", cpu=2, priority=-1),
        node("c", inputs={"v": "av"}),
    )
    refs = f.tick()
    f.accept(refs["a"])
    assert f.state("big").status == "ready"
    assert f.sched.cancel_run("r1", "test", 1.0)


def endings(f: Fleet) -> None:
    """Run timeouts skip ready nodes; infeasibility fails ready and pending ones."""
    f.register()
    f.submit(node("a", cpu=2), node("b", cpu=2), timeout=10)
    f.tick()
    f.tick(11.0)  # b ready -> skipped
    f.submit(node("x", cpu=64, outputs=("xv",)), node("y", inputs={"v": "xv"}), run_id="r2")
    g = Fleet(infeasible_grace=5.0)
    g.register()
    g.submit(node("x", cpu=64))
    g.tick(6.0)  # ready -> failed
    f.moves.extend(g.moves)


def adoptions(f: Fleet) -> None:
    """Attempts an agent reports that were lost track of: of a pending and a ready node."""
    f.register()
    f.submit(node("a", outputs=("av",)), node("b", inputs={"v": "av"}), node("big", cpu=2))
    f.tick()
    assert (f.state("a").status, f.state("big").status) == ("placed", "ready")
    b = AttemptRef(run_id="r1", node_id="b", attempt=1)
    big = AttemptRef(run_id="r1", node_id="big", attempt=1)
    f.beat((f.state("a").ref, b, big))


def restores(f: Fleet) -> None:
    """A run rebuilt from the store: stored statuses are entered from pending."""
    dag = Dag(nodes=(node("a", outputs=("av",)), node("b", inputs={"v": "av"}), node("c")))
    view = RunView(
        run_id="r1",
        submitted_at=0,
        nodes=(
            NodeView(id="a", task=TASK, status="succeeded", attempt=1, worker="w"),
            NodeView(id="b", task=TASK, status="placed", attempt=1, worker="w"),
            NodeView(id="c", task=TASK, status="running", attempt=1, worker="w"),
        ),
        outputs={"av": 1},
    )
    f.sched.restore(Submit(run_id="r1", dag=dag), view, 0.0, 10.0)
    f.sched.validate_state()
    f.register(running=(AttemptRef(run_id="r1", node_id="b", attempt=1),))


def batches(f: Fleet) -> None:
    """A batch member waits ready, then ends with its element of its batch's result."""
    f.register()
    f.submit(node("m", args=(1,), outputs=("result",), batch=Batching(size=1)))
    f.outcome(f.tick()["batch"], "succeeded")


def chains(f: Fleet) -> None:
    """A chain's nodes are sent with the first (pending->placed); when an upstream attempt
    fails they wait again (placed->pending, running->pending), and one that is to be placed
    again before its upstream succeeded waits for it (ready->pending)."""
    f.register()
    retry = RetryPolicy(max_retries=1)
    f.submit(
        node("a", outputs=("av",), retry=retry),
        node("b", inputs={"v": "av"}, outputs=("bv",)),
        node("c", inputs={"v": "bv"}),
    )
    refs = f.tick()
    assert set(refs) == {"a", "b", "c"}
    f.accept(refs["b"])
    f.outcome(refs["a"], "failed")  # retried: b running->pending, c placed->pending
    assert (f.state("b").status, f.state("c").status) == ("pending", "pending")
    refs = f.tick(5.0)
    assert set(refs) == {"a", "b", "c"}
    f.sched.rejected(Reject(ref=refs["b"], worker="w", code="capacity", reason="full"), 5.0)
    assert (f.state("b").status, f.state("c").status) == ("pending", "pending")
    f.outcome(refs["a"], "succeeded", at=6.0)
    assert f.state("b").status == "ready"


chains.config = {"pipeline": 4}  # type: ignore[attr-defined]

SCENARIOS = (happy_path, failures, cancels, endings, adoptions, restores, batches, chains)


def fleet_for(scenario: Any) -> Fleet:
    return Fleet(**getattr(scenario, "config", {}))


def moves_made() -> Iterator[tuple[NodeStatus, NodeStatus]]:
    for scenario in SCENARIOS:
        f = fleet_for(scenario)
        scenario(f)
        yield from f.moves


def test_every_table_entry_is_a_move_the_scheduler_makes() -> None:
    made = set(moves_made())
    assert made <= set(NODE_TRANSITIONS), "every move goes through the table"
    assert set(NODE_TRANSITIONS) - made == set(), "entries no scenario reaches"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_scenarios_keep_the_books_valid(scenario: Any) -> None:
    f = fleet_for(scenario)
    scenario(f)
    f.sched.validate_state()


# -- validate_state -------------------------------------------------------------------------


@pytest.fixture
def busy() -> Fleet:
    """r1: a running on w, b placed on w, c waiting for a."""
    f = Fleet()
    f.register()
    f.submit(node("a", outputs=("av",)), node("b"), node("c", inputs={"v": "av"}))
    refs = f.tick()
    f.accept(refs["a"])
    return f


def test_validate_state_catches_a_reservation_released_behind_its_back(busy: Fleet) -> None:
    ref = busy.state("a").ref
    busy.pool.release(ref)
    with pytest.raises(AssertionError, match=r"attempt r1\.a\.1 on w holds no reservation"):
        busy.sched.validate_state()


def test_validate_state_catches_a_hand_kept_count_gone_wrong(busy: Fleet) -> None:
    busy.sched.runs["r1"].in_flight += 1
    with pytest.raises(AssertionError, match="run r1: in_flight 3, 2 nodes in flight"):
        busy.sched.validate_state()


def test_validate_state_catches_a_status_set_directly(busy: Fleet) -> None:
    busy.state("a").status = "succeeded"
    with pytest.raises(AssertionError, match="tracked while succeeded"):
        busy.sched.validate_state()


def test_validate_state_catches_a_ready_node_nobody_queued(busy: Fleet) -> None:
    c = busy.state("c")
    c.status, c.waiting = "ready", 0
    with pytest.raises(AssertionError, match="r1/c is ready but neither queued nor delayed"):
        busy.sched.validate_state()
