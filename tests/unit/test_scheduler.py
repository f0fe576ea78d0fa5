"""The run/node state machine (coordinator/scheduling), driven directly with explicit times.

Every event is given its ``now``; decisions are read with ``take()`` after each step.
The ``Cluster`` harness remembers each worker's spec so that heartbeats repeat it, and
builds the agent's messages (Register, Heartbeat, Outcome, Reject) with little noise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from coordinator.checkpoint import Checkpointer
from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.scheduling.machine import Decisions, Scheduler, SchedulerConfig
from coordinator.turns import Turns
from shared.dag import Dag, Node, RetryPolicy, RunOptions
from shared.labels import as_selectors
from shared.resources import ResourceRequest, WorkerSpec
from shared.wire.protocol import (
    Assignment,
    AttemptRef,
    ErrorInfo,
    Heartbeat,
    Outcome,
    PayloadRef,
    Register,
    Reject,
    task_digest,
)
from shared.wire.runs import NodeView, RunView, Submit

TASK = "app:work"
SLOW = 1000.0
"""A heartbeat interval long enough that a worker is never lost within a test."""


def n(node_id: str, **fields: Any) -> Node:
    """A node of the one task every worker has; ``cpu=`` etc. go into its request."""
    request = {k: fields.pop(k) for k in ("cpu", "ram_mb", "gpus") if k in fields}
    if "required" in fields:
        request["required"] = as_selectors(fields.pop("required"))
    if request:
        fields["request"] = ResourceRequest(**request)
    fields.setdefault("task", TASK)
    return Node(id=node_id, **fields)


class Cluster:
    """A Scheduler with its pool, plus message builders for the agents' side."""

    def __init__(self, **config: Any) -> None:
        self.pool = ResourceAwareWorkerPool()
        self.sched = Scheduler(self.pool, SchedulerConfig(**config), rand=lambda: 0.5)
        self.specs: dict[str, WorkerSpec] = {}
        self.started: dict[str, float] = {}
        self.intervals: dict[str, float] = {}
        self.tasks: dict[str, tuple[str, ...]] = {}
        self.seq = 0

    # -- agents -------------------------------------------------------------------------

    def register(
        self,
        name: str,
        at: float = 0.0,
        *,
        cpu: float = 4,
        ram_mb: int = 8192,
        gpus: int = 0,
        labels: Mapping[str, str] | None = None,
        started_at: float = 1.0,
        interval: float = SLOW,
        tasks: Iterable[str] = (TASK,),
        running: Iterable[AttemptRef] = (),
    ) -> WorkerSpec:
        spec = WorkerSpec.model_validate(
            {"name": name, "cpu": cpu, "ram_mb": ram_mb, "gpus": gpus, "labels": labels or {}}
        )
        self.specs[name], self.started[name], self.intervals[name] = spec, started_at, interval
        self.tasks[name] = tuple(tasks)
        msg = Register(
            spec=spec,
            agent_version="test",
            pid=1,
            started_at=started_at,
            heartbeat_interval=interval,
            tasks=self.tasks[name],
            running=tuple(running),
        )
        self.sched.register(msg, at)
        return spec

    def beat(
        self,
        name: str,
        at: float,
        *,
        running: Iterable[AttemptRef] = (),
        draining: bool = False,
        started_at: float | None = None,
    ) -> None:
        spec = self.specs[name]
        self.seq += 1
        msg = Heartbeat(
            worker=name,
            started_at=self.started[name] if started_at is None else started_at,
            seq=self.seq,
            interval=self.intervals[name],
            capacity=spec,
            cpu_percent=0.0,
            available_ram_mb=spec.ram_mb,
            running=tuple(running),
            draining=draining,
            tasks_digest=task_digest(self.tasks[name]),
        )
        self.sched.heartbeat(msg, at)

    def succeed(
        self,
        a: Assignment,
        worker: str,
        at: float,
        value: Any = None,
        ref: PayloadRef | None = None,
    ) -> None:
        msg = Outcome(
            ref=a.ref,
            worker=worker,
            status="succeeded",
            return_value=value,
            return_ref=ref,
            started_at=at,
            finished_at=at,
        )
        self.sched.outcome(msg, at)

    def fail(self, a: Assignment | AttemptRef, worker: str, at: float, error: str = "E") -> None:
        ref = a.ref if isinstance(a, Assignment) else a
        msg = Outcome(
            ref=ref,
            worker=worker,
            status="failed",
            error=ErrorInfo(type=error, message="boom"),
            started_at=at,
            finished_at=at,
        )
        self.sched.outcome(msg, at)

    def cancelled(self, a: Assignment, worker: str, at: float) -> None:
        """The agent stopped the attempt as asked and reports it."""
        msg = Outcome(
            ref=a.ref,
            worker=worker,
            status="cancelled",
            error=ErrorInfo(type="AttemptCancelled", message="asked"),
            started_at=at,
            finished_at=at,
        )
        self.sched.outcome(msg, at)

    def reject(self, a: Assignment, worker: str, at: float, code: str = "capacity") -> None:
        self.sched.rejected(Reject(ref=a.ref, worker=worker, code=code, reason="no"), at)  # type: ignore[arg-type]

    # -- runs ---------------------------------------------------------------------------

    def submit(
        self,
        run_id: str,
        *nodes: Node,
        at: float = 0.0,
        inputs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        given = dict(inputs or {})
        dag = Dag(nodes=nodes, inputs=tuple(given))
        self.sched.submit(
            Submit(run_id=run_id, dag=dag, inputs=given, options=RunOptions(**options)), at
        )

    def tick(self, at: float) -> Decisions:
        self.sched.tick(at)
        return self.sched.take()

    def view(self, run_id: str) -> RunView:
        return self.sched.view(run_id)

    def node(self, run_id: str, node_id: str) -> NodeView:
        return self.view(run_id).node(node_id)

    def status(self, run_id: str) -> dict[str, str]:
        return {v.id: v.status for v in self.view(run_id).nodes}

    def reserved_keys(self) -> set[Any]:
        return {p.key for p in self.pool.reservations()}


def only(decisions: Decisions) -> tuple[str, Assignment]:
    """The single assignment of a decision batch, with its worker."""
    found = [(w, a) for w, batch in decisions.assign.items() for a in batch]
    assert len(found) == 1, f"expected one assignment, got {[(w, a.ref.key) for w, a in found]}"
    return found[0]


def by_node(decisions: Decisions) -> dict[str, tuple[str, Assignment]]:
    found = {a.ref.node_id: (w, a) for w, batch in decisions.assign.items() for a in batch}
    assert len(found) == sum(len(b) for b in decisions.assign.values()), "a node assigned twice"
    return found


def keys(decisions: Decisions) -> set[str]:
    return {a.ref.key for batch in decisions.assign.values() for a in batch}


def lost(decisions: Decisions) -> list[str]:
    """Names of the workers the batch reports lost."""
    return [item[0] if isinstance(item, tuple) else item for item in decisions.lost_workers]


def cancels(decisions: Decisions) -> dict[str, set[str]]:
    return {w: {ref.key for ref, _ in batch} for w, batch in decisions.cancel.items()}


@pytest.fixture
def c() -> Cluster:
    return Cluster()


# -- values flow -------------------------------------------------------------------------------


def test_chain_passes_outputs_as_kwargs_of_the_next_assignment(c: Cluster) -> None:
    c.register("w1")
    c.submit(
        "r1",
        n("a", inputs={"x": "seed"}, outputs=("av",)),
        n("b", inputs={"y": "av"}, kwargs={"k": "const"}, outputs=("bv",)),
        n("c", inputs={"z": "bv", "s": "seed"}, outputs=("cv",)),
        inputs={"seed": 5},
    )
    w, a = only(c.tick(0))
    assert (w, a.ref.key, a.task_name, a.kwargs) == ("w1", "r1.a.1", TASK, {"x": 5})
    assert c.status("r1") == {"a": "placed", "b": "pending", "c": "pending"}
    c.succeed(a, w, 1, value=6)
    _, b = only(c.tick(1))
    assert b.kwargs == {"y": 6, "k": "const"}
    c.succeed(b, w, 2, value=[6, 6])
    _, last = only(c.tick(2))
    assert last.kwargs == {"z": [6, 6], "s": 5}
    c.succeed(last, w, 3, value={"done": True})
    d = c.tick(3)
    assert d.finished == ["r1"]
    view = c.view("r1")
    assert view.status == "succeeded"
    assert view.finished_at == 3
    assert view.outputs["av"] == 6
    assert view.outputs["bv"] == [6, 6]
    assert view.outputs["cv"] == {"done": True}
    assert c.reserved_keys() == set()


def test_nothing_is_dispatched_before_a_tick(c: Cluster) -> None:
    c.register("w1")
    c.submit("r1", n("a"))
    d = c.sched.take()
    assert d.assign == {}
    assert d.changed == {"r1"}
    assert c.status("r1") == {"a": "ready"}


def test_diamond_runs_the_middle_nodes_in_parallel(c: Cluster) -> None:
    c.register("w1", cpu=4)
    c.submit(
        "r1",
        n("top", outputs=("t",)),
        n("left", inputs={"v": "t"}, outputs=("l",)),
        n("right", inputs={"v": "t"}, outputs=("r",)),
        n("bottom", inputs={"a": "l", "b": "r"}, outputs=("out",)),
    )
    w, top = only(c.tick(0))
    c.succeed(top, w, 1, value=10)
    middle = by_node(c.tick(1))
    assert set(middle) == {"left", "right"}
    assert c.sched.in_flight == 2
    assert middle["left"][1].kwargs == {"v": 10}
    c.succeed(middle["left"][1], w, 2, value="L")
    assert c.tick(2).assign == {}, "bottom must wait for right as well"
    assert c.node("r1", "bottom").status == "pending"
    c.succeed(middle["right"][1], w, 3, value="R")
    _, bottom = only(c.tick(3))
    assert bottom.kwargs == {"a": "L", "b": "R"}


def test_multi_output_node_unpacks_a_list_result(c: Cluster) -> None:
    c.register("w1")
    c.submit(
        "r1",
        n("split", outputs=("head", "tail")),
        n("use", inputs={"h": "head", "t": "tail"}),
    )
    w, a = only(c.tick(0))
    c.succeed(a, w, 1, value=[1, [2, 3]])
    _, use = only(c.tick(1))
    assert use.kwargs == {"h": 1, "t": [2, 3]}
    assert c.view("r1").outputs == {"head": 1, "tail": [2, 3]}


@pytest.mark.parametrize(
    ("value", "ref", "got"),
    [
        ([1, 2, 3], None, "a list of 3"),
        ([1], None, "a list of 1"),
        (7, None, "a int"),
        ({"head": 1, "tail": 2}, None, "a dict"),
        (None, PayloadRef(name="w.big", size=10, sha256="0" * 64), "a stored value"),
    ],
)
def test_multi_output_with_wrong_result_fails_with_output_mismatch(
    c: Cluster, value: Any, ref: PayloadRef | None, got: str
) -> None:
    c.register("w1")
    c.submit("r1", n("split", outputs=("head", "tail")), n("use", inputs={"h": "head"}))
    w, a = only(c.tick(0))
    c.succeed(a, w, 1, value=value, ref=ref)
    view = c.view("r1")
    node = view.node("split")
    assert node.status == "failed"
    assert node.error is not None
    assert node.error.type == "OutputMismatch"
    assert node.error.message == f"declares 2 outputs ['head', 'tail'], returned {got}"
    assert view.node("use").status == "skipped"
    assert view.status == "failed"
    assert "OutputMismatch" in view.error
    assert "head" not in view.outputs


def test_single_output_stored_by_reference_travels_as_an_arg_ref(c: Cluster) -> None:
    c.register("w1")
    c.submit("r1", n("make", outputs=("blob",)), n("use", inputs={"data": "blob"}))
    w, a = only(c.tick(0))
    big = PayloadRef(name="w.r1-make-1-out", size=5_000_000, sha256="0" * 64)
    c.succeed(a, w, 1, ref=big)
    _, use = only(c.tick(1))
    assert use.kwargs == {"data": None}
    assert use.arg_refs == {"data": big}
    assert c.view("r1").output_refs == {"blob": big}


def test_node_without_outputs_still_releases_its_followers(c: Cluster) -> None:
    c.register("w1")
    c.submit("r1", n("first"), n("second", after=("first",)))
    w, a = only(c.tick(0))
    c.succeed(a, w, 1, value="ignored")
    _, second = only(c.tick(1))
    assert second.ref.node_id == "second"
    assert second.kwargs == {}
    assert c.view("r1").outputs == {}


def test_submit_of_a_known_run_id_is_idempotent(c: Cluster) -> None:
    c.register("w1")
    c.submit("r1", n("a"))
    c.submit("r1", n("a"), n("b"))
    assert [v.id for v in c.view("r1").nodes] == ["a"]
    assert keys(c.tick(0)) == {"r1.a.1"}


# -- resource routing --------------------------------------------------------------------------


def test_gpu_node_goes_to_the_gpu_worker(c: Cluster) -> None:
    c.register("cpu-box", cpu=16, ram_mb=65536)
    c.register("gpu-box", cpu=16, ram_mb=65536, gpus=2)
    c.submit("r1", n("train", gpus=1), n("prep", cpu=1))
    placed = by_node(c.tick(0))
    worker, train = placed["train"]
    assert worker == "gpu-box"
    assert len(train.gpu_devices) == 1
    assert train.gpu_devices[0] in (0, 1)
    assert c.node("r1", "train").gpu_devices == train.gpu_devices
    assert placed["prep"][0] == "cpu-box", "CPU-only work should keep off the GPU host"


def test_two_whole_gpu_nodes_get_distinct_devices(c: Cluster) -> None:
    c.register("gpu-box", cpu=16, ram_mb=65536, gpus=2)
    c.submit("r1", n("a", gpus=1), n("b", gpus=1), n("c", gpus=1))
    placed = by_node(c.tick(0))
    assert set(placed) == {"a", "b"}
    devices = [d for _, a in placed.values() for d in a.gpu_devices]
    assert sorted(devices) == [0, 1]
    assert c.node("r1", "c").status == "ready"
    assert c.node("r1", "c").reason.startswith("busy")


def test_required_label_routes_to_the_labelled_worker(c: Cluster) -> None:
    c.register("plain", cpu=8)
    c.register("eu", cpu=8, labels={"zone": "eu"})
    c.register("us", cpu=8, labels={"zone": "us"})
    c.submit(
        "r1",
        n("in-eu", required=["zone=eu"]),
        n("not-eu", required=["zone in (us)"]),
        n("zoned", required=["zone"]),
    )
    placed = by_node(c.tick(0))
    assert placed["in-eu"][0] == "eu"
    assert placed["not-eu"][0] == "us"
    assert placed["zoned"][0] in ("eu", "us")


def test_no_worker_is_assigned_beyond_its_capacity(c: Cluster) -> None:
    c.register("small", cpu=2, ram_mb=4096)
    c.register("big", cpu=4, ram_mb=4096)
    c.submit("r1", *(n(f"n{i}", cpu=1.5, ram_mb=1024) for i in range(8)))
    running: dict[str, tuple[str, Assignment]] = {}
    done = 0
    for step in range(12):
        d = c.tick(step)
        running.update(by_node(d))
        for name in ("small", "big"):
            usage = c.pool.usage(name)
            mine = [a for w, a in running.values() if w == name]
            assert sum(a.request.cpu for a in mine) <= usage.cpu
            assert sum(a.request.ram_mb for a in mine) <= usage.ram_mb
            assert usage.cpu_free >= 0
            assert usage.ram_free_mb >= 0
            assert usage.reservations == len(mine)
        # small holds one 1.5-core node, big two: never more than three at once.
        assert len(running) <= 3
        if running:
            node_id = sorted(running)[0]
            w, a = running.pop(node_id)
            c.succeed(a, w, step + 0.5)
            done += 1
    assert done == 8
    assert c.view("r1").status == "succeeded"
    assert c.reserved_keys() == set()


def test_pool_reservations_follow_the_scheduler_attempts(c: Cluster) -> None:
    c.register("w1", cpu=4)
    c.submit("r1", n("a", cpu=1), n("b", cpu=2))
    placed = by_node(c.tick(0))
    assert c.reserved_keys() == {a.ref for _, a in placed.values()}
    assert c.pool.usage("w1").cpu_free == 1
    w, a = placed["a"]
    c.succeed(a, w, 1)
    assert c.reserved_keys() == {placed["b"][1].ref}
    assert c.pool.usage("w1").cpu_free == 2


# -- a task is placed only where it is known ---------------------------------------------------


def test_node_is_only_dispatched_to_a_worker_that_has_its_task(c: Cluster) -> None:
    # Together the two workers hold all four nodes, so whatever the policy, a scheduler
    # blind to tasks fills w1 too.
    c.register("w1", cpu=4, tasks=("app:other",))
    c.register("w2", cpu=4, tasks=(TASK,))
    c.submit("r1", *(n(f"a{i}", cpu=2) for i in range(4)))
    d = c.tick(0)
    assert set(d.assign) == {"w2"}
    assert len(d.assign["w2"]) == 2


def test_unknown_task_reject_steers_the_node_away_from_that_worker(c: Cluster) -> None:
    c.register("w1", cpu=4, tasks=("app:other",))
    c.register("w2", cpu=4, tasks=(TASK,))
    c.submit("r1", *(n(f"a{i}", cpu=2) for i in range(4)))
    d = c.tick(0)
    for step in range(1, 8):
        for a in d.assign.get("w1", []):
            c.reject(a, "w1", step, code="unknown_task")
        d = c.tick(step)
        assert "w1" not in d.assign, f"placed on w1 again after it said it lacks {TASK!r}"
    assert c.view("r1").status == "running"


def test_a_worker_without_the_task_does_not_clear_task_infeasibility() -> None:
    c = Cluster(infeasible_grace=10)
    c.register("w1", tasks=("app:other",))
    c.submit("r1", n("a"))
    assert c.node("r1", "a").reason == f"infeasible: no live worker has task {TASK!r}"
    c.register("w2", at=1, tasks=("app:other",))
    assert c.node("r1", "a").reason == f"infeasible: no live worker has task {TASK!r}"


def test_task_nobody_has_fails_the_run_at_submit(c: Cluster) -> None:
    c.register("w1", tasks=("app:other",))
    c.submit("r1", n("a"))
    d = c.sched.take()
    assert d.finished == ["r1"]
    assert c.view("r1").error == f"infeasible: a: no live worker has task {TASK!r}"


# -- busy versus infeasible --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "dimension"),
    [
        ({"gpus": 1}, "gpus"),
        ({"cpu": 64}, "cpu"),
        ({"ram_mb": 1_000_000}, "ram_mb"),
        ({"required": ["zone=mars"]}, "labels"),
    ],
)
def test_infeasible_node_fails_the_run_at_submit_without_grace(
    c: Cluster, fields: dict[str, Any], dimension: str
) -> None:
    c.register("w1", cpu=8, ram_mb=16384)
    c.submit("r1", n("ok"), n("impossible", **fields), n("after", after=("ok",)))
    d = c.sched.take()
    assert d.finished == ["r1"]
    assert d.assign == {}
    view = c.view("r1")
    assert view.status == "failed"
    assert view.error.startswith("infeasible: impossible: ")
    assert f"{dimension}: 1 workers" in view.error
    node = view.node("impossible")
    assert node.status == "failed"
    assert node.error is not None
    assert node.error.type == "Infeasible"
    assert f"{dimension}: 1 workers" in node.error.message
    assert {v.id: v.status for v in view.nodes if v.id != "impossible"} == {
        "ok": "skipped",
        "after": "skipped",
    }
    assert c.tick(1).assign == {}


def test_run_with_no_worker_at_all_is_infeasible_without_grace(c: Cluster) -> None:
    c.submit("r1", n("a"))
    assert c.view("r1").status == "failed"
    assert c.view("r1").error.startswith("infeasible: a: ")


def test_infeasible_node_waits_within_grace_and_runs_when_a_fitting_worker_joins() -> None:
    c = Cluster(infeasible_grace=10)
    c.register("w1")
    c.submit("r1", n("train", gpus=1), n("prep"))
    view = c.view("r1")
    assert view.status == "running"
    assert view.node("train").reason.startswith("infeasible: ")
    d = c.tick(5)
    assert set(by_node(d)) == {"prep"}, "the feasible node is not held back"
    assert c.view("r1").status == "running"
    c.register("gpu", at=9, gpus=1)
    assert c.node("r1", "train").reason == ""
    w, a = by_node(c.tick(9.5))["train"]
    assert w == "gpu"
    assert c.tick(20).finished == []
    c.succeed(a, w, 21)
    assert c.node("r1", "train").status == "succeeded"


def test_infeasible_node_fails_the_run_when_grace_ends() -> None:
    c = Cluster(infeasible_grace=10)
    c.register("w1")
    c.submit("r1", n("train", gpus=1), n("prep"), at=100)
    w, prep = only(c.tick(100))
    assert c.tick(109.9).finished == []
    d = c.tick(110)
    assert d.finished == ["r1"]
    assert cancels(d) == {w: {prep.ref.key}}
    view = c.view("r1")
    assert view.status == "failed"
    assert view.error.startswith("infeasible: train: ")
    assert view.node("train").error is not None
    assert view.node("train").error.type == "Infeasible"
    assert view.node("prep").status == "cancelled"
    assert c.reserved_keys() == {prep.ref}, "held until the agent has stopped it"
    c.cancelled(prep, w, 110.5)
    assert c.reserved_keys() == set()


def test_a_worker_joining_leaves_a_run_that_failed_infeasible_as_it_ended() -> None:
    c = Cluster(infeasible_grace=10)
    c.register("w1")
    c.submit("r1", n("train", gpus=1), at=100)
    assert c.tick(110).finished == ["r1"]
    ended = c.view("r1")
    c.sched.take()
    c.register("w2", at=111, gpus=1)
    error = ended.node("train").error
    assert error is not None
    assert c.sched.runs["r1"].infeasible == {"train": error.message}
    assert c.sched.runs["r1"].nodes["train"].reason.startswith("infeasible: ")
    assert c.tick(111).changed == set()
    assert c.view("r1") == ended


def test_node_made_infeasible_by_a_lost_worker_fails_when_its_return_grace_ends() -> None:
    c = Cluster(lost_worker_grace=5)
    c.register("gpu", gpus=1, interval=1)
    c.register("cpu")
    c.submit("r1", n("train", gpus=1))
    w, _ = only(c.tick(0))
    assert w == "gpu"
    c.beat("cpu", 3.5)
    d = c.tick(3.5)
    assert lost(d) == ["gpu"]
    assert c.node("r1", "train").reason.startswith("infeasible: ")
    c.beat("cpu", 8)
    assert c.tick(8).finished == []
    c.beat("cpu", 8.5)
    assert c.tick(8.5).finished == ["r1"]


def test_busy_node_waits_and_is_dispatched_when_an_outcome_releases_capacity(c: Cluster) -> None:
    c.register("w1", cpu=2)
    c.submit("r1", n("a", cpu=2), n("b", cpu=2))
    w, first = only(c.tick(0))
    waiting = "b" if first.ref.node_id == "a" else "a"
    node = c.node("r1", waiting)
    assert node.status == "ready"
    assert node.reason.startswith("busy (cpu: 1 workers)")
    assert c.view("r1").status == "running"
    assert c.tick(50).assign == {}, "busy is never a failure, however long"
    c.succeed(first, w, 60)
    w2, second = only(c.tick(60))
    assert (w2, second.ref.node_id) == ("w1", waiting)
    assert c.node("r1", waiting).reason == ""


# -- parallelism caps --------------------------------------------------------------------------


def test_global_max_parallel_is_never_exceeded() -> None:
    c = Cluster(max_parallel=2)
    c.register("w1", cpu=32)
    c.submit("r1", *(n(f"a{i}") for i in range(3)))
    c.submit("r2", *(n(f"b{i}") for i in range(3)))
    running = by_node(c.tick(0))
    assert len(running) == 2
    assert c.sched.in_flight == 2
    assert c.tick(1).assign == {}
    seen = set(running)
    for step in range(2, 8):
        node_id = sorted(running)[0]
        w, a = running.pop(node_id)
        c.succeed(a, w, step)
        new = by_node(c.tick(step))
        running.update(new)
        seen |= set(new)
        assert c.sched.in_flight == len(running) <= 2
    assert len(seen) == 6


def test_run_max_parallel_limits_that_run_only(c: Cluster) -> None:
    c.register("w1", cpu=32)
    c.submit("limited", *(n(f"a{i}") for i in range(4)), max_parallel=1)
    c.submit("free", *(n(f"b{i}") for i in range(3)))
    d = c.tick(0)
    runs = [a.ref.run_id for batch in d.assign.values() for a in batch]
    assert runs.count("limited") == 1
    assert runs.count("free") == 3
    for step in range(1, 4):
        [(w, a)] = [(w, a) for w, a in by_node(d).values() if a.ref.run_id == "limited"]
        c.succeed(a, w, step)
        d = c.tick(step)
        assert len(d.assign.get("w1", [])) == 1
        assert c.sched.runs["limited"].in_flight == 1


# -- priority ----------------------------------------------------------------------------------


def test_higher_priority_ready_nodes_are_dispatched_first(c: Cluster) -> None:
    c.register("w1", cpu=1)
    c.submit("r1", n("low", priority=-5), n("mid"), n("high", priority=7), n("urgent", priority=9))
    order = []
    for step in range(4):
        w, a = only(c.tick(step))
        order.append(a.ref.node_id)
        c.succeed(a, w, step + 0.5)
    assert order == ["urgent", "high", "mid", "low"]


def test_run_priority_adds_to_node_priority(c: Cluster) -> None:
    c.register("w1", cpu=1)
    c.submit("normal", n("a", priority=3))
    c.submit("vip", n("a"), priority=5)
    _w, a = only(c.tick(0))
    assert a.ref.run_id == "vip"


def test_equal_priority_is_dispatched_in_age_order(c: Cluster) -> None:
    c.register("w1", cpu=1)
    c.submit("blocker", n("x"), at=0)
    w, blocker = only(c.tick(0))
    for i, run_id in enumerate(["r3", "r1", "r2"]):
        c.submit(run_id, n("x"), at=1 + i)
    assert c.tick(4).assign == {}
    c.succeed(blocker, w, 5)
    order = []
    for step in range(6, 9):
        w, a = only(c.tick(step))
        order.append(a.ref.run_id)
        c.succeed(a, w, step + 0.5)
    assert order == ["r3", "r1", "r2"]


def test_small_work_backfills_past_a_busy_big_node_until_it_starves(c: Cluster) -> None:
    c.register("w1", cpu=4)
    c.submit("filler", n("f", cpu=2), at=0)
    w, filler = only(c.tick(0))
    c.submit("big", n("b", cpu=4, priority=5), at=1)
    c.submit("small", n("s", cpu=1), at=1)
    w, small = only(c.tick(1))
    assert small.ref.run_id == "small", "a small node may use room the big one cannot"
    c.succeed(small, w, 2)
    c.submit("late", n("s", cpu=1), at=40)
    assert c.tick(40).assign == {}, "after `aging` seconds the big node stops backfilling"
    c.succeed(filler, w, 41)
    _, big = only(c.tick(41))
    assert big.ref.run_id == "big"


# -- application retries -----------------------------------------------------------------------


def test_app_failure_is_redispatched_after_the_delay_with_the_next_attempt() -> None:
    c = Cluster()
    c.register("w1")
    c.submit("r1", n("a", retry=RetryPolicy(max_retries=2, delay=1)))
    w, a1 = only(c.tick(0))
    assert a1.ref.attempt == 1
    c.fail(a1, w, 10, error="ValueError")
    node = c.node("r1", "a")
    assert (node.status, node.attempt) == ("ready", 1)
    assert node.error is not None
    assert node.error.type == "ValueError"
    assert c.tick(10.5).assign == {}
    w, a2 = only(c.tick(11))
    assert a2.ref.attempt == 2
    assert c.node("r1", "a").attempt == 2
    c.fail(a2, w, 12)
    assert c.tick(12.9).assign == {}
    _, a3 = only(c.tick(13))
    assert a3.ref.attempt == 3
    c.fail(a3, w, 14)
    view = c.view("r1")
    assert view.status == "failed"
    assert view.node("a").status == "failed"
    assert view.error == "node a failed: E: boom"


def test_retry_delay_grows_with_backoff() -> None:
    c = Cluster()
    c.register("w1")
    c.submit("r1", n("a", retry=RetryPolicy(max_retries=3, delay=1, backoff=3)))
    w, a = only(c.tick(0))
    c.fail(a, w, 0)
    w, a = only(c.tick(1))
    c.fail(a, w, 1)
    assert c.tick(3.9).assign == {}
    _, a = only(c.tick(4))
    assert a.ref.attempt == 3


def test_retry_jitter_uses_the_injected_random_draw() -> None:
    pool = ResourceAwareWorkerPool()
    sched = Scheduler(pool, SchedulerConfig(), rand=lambda: 0.0)
    c = Cluster()
    c.pool, c.sched = pool, sched
    c.register("w1")
    c.submit("r1", n("a", retry=RetryPolicy(max_retries=1, delay=4, jitter=0.5)))
    w, a = only(c.tick(0))
    c.fail(a, w, 0)
    assert c.tick(1.9).assign == {}
    assert keys(c.tick(2)) == {"r1.a.2"}


def test_zero_delay_retry_is_dispatched_on_the_next_tick(c: Cluster) -> None:
    c.register("w1")
    c.submit("r1", n("a", retry=RetryPolicy(max_retries=1)))
    w, a = only(c.tick(0))
    c.fail(a, w, 0)
    assert keys(c.tick(0)) == {"r1.a.2"}


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        ("ConnectionError", True),
        ("builtins.ConnectionError", True),
        ("app.errors.Flaky", True),
        ("ValueError", False),
        ("app.errors.Fatal", False),
    ],
)
def test_retry_on_retries_only_the_named_errors(error: str, retried: bool) -> None:
    c = Cluster()
    c.register("w1")
    policy = RetryPolicy(max_retries=3, retry_on=("ConnectionError", "app.errors.Flaky"))
    c.submit("r1", n("a", retry=policy))
    w, a = only(c.tick(0))
    c.fail(a, w, 1, error=error)
    assert c.node("r1", "a").status == ("ready" if retried else "failed")
    assert c.view("r1").status == ("running" if retried else "failed")


def test_timed_out_outcome_is_a_retryable_failure(c: Cluster) -> None:
    c.register("w1")
    c.submit("r1", n("a", retry=RetryPolicy(max_retries=1), timeout=5))
    w, a = only(c.tick(0))
    assert a.timeout == 5
    out = Outcome(ref=a.ref, worker=w, status="timed_out", started_at=0, finished_at=5)
    c.sched.outcome(out, 5)
    node = c.node("r1", "a")
    assert node.status == "ready"
    assert node.error is not None
    assert node.error.type == "TimeoutError"
    assert keys(c.tick(5)) == {"r1.a.2"}


def test_exhausted_retries_with_on_error_stop_fail_the_run_and_cancel_in_flight(
    c: Cluster,
) -> None:
    c.register("w1", cpu=8)
    c.submit(
        "r1",
        n("flaky", retry=RetryPolicy(max_retries=1)),
        n("slow"),
        n("later", after=("slow",)),
        on_error="stop",
    )
    placed = by_node(c.tick(0))
    w, flaky = placed["flaky"]
    _, slow = placed["slow"]
    c.sched.accepted(slow.ref, 0.5)
    c.fail(flaky, w, 1)
    _, flaky2 = only(c.tick(1))
    c.fail(flaky2, w, 2, error="KeyError")
    d = c.sched.take()
    assert d.finished == ["r1"]
    assert cancels(d) == {"w1": {slow.ref.key}}
    [(_, reason)] = d.cancel["w1"]
    assert reason == "node flaky failed: KeyError: boom"
    view = c.view("r1")
    assert view.status == "failed"
    assert {v.id: v.status for v in view.nodes} == {
        "flaky": "failed",
        "slow": "cancelled",
        "later": "skipped",
    }
    assert c.sched.in_flight == 0
    assert c.reserved_keys() == {slow.ref}, "held until the agent has stopped it"
    c.beat(w, 2.5, running=[slow.ref])
    assert c.reserved_keys() == {slow.ref}, "still listed: still running"
    c.beat(w, 2.6)
    assert c.reserved_keys() == set(), "accepted, then no longer listed: it ended"
    c.succeed(slow, w, 3, value=1)
    assert c.node("r1", "slow").status == "cancelled", "the cancelled attempt's outcome is late"
    assert c.tick(3).assign == {}


def test_exhausted_retries_with_on_error_continue_skip_downstream_and_finish_others(
    c: Cluster,
) -> None:
    c.register("w1", cpu=8)
    c.submit(
        "r1",
        n("bad", outputs=("b",)),
        n("child", inputs={"v": "b"}, outputs=("cv",)),
        n("grandchild", inputs={"v": "cv"}),
        n("good", outputs=("g",)),
        n("good-next", inputs={"v": "g"}, outputs=("gn",)),
        on_error="continue",
    )
    placed = by_node(c.tick(0))
    assert set(placed) == {"bad", "good"}
    c.fail(placed["bad"][1], "w1", 1)
    d = c.sched.take()
    assert d.finished == []
    assert d.cancel == {}
    assert c.status("r1") == {
        "bad": "failed",
        "child": "skipped",
        "grandchild": "skipped",
        "good": "placed",
        "good-next": "pending",
    }
    assert c.node("r1", "child").reason == "skipped: upstream bad failed"
    assert c.view("r1").status == "running"
    c.succeed(placed["good"][1], "w1", 2, value="G")
    _, nxt = only(c.tick(2))
    assert nxt.kwargs == {"v": "G"}
    c.succeed(nxt, "w1", 3, value="GN")
    d = c.tick(3)
    assert d.finished == ["r1"]
    view = c.view("r1")
    assert view.status == "failed"
    assert view.error == "failed nodes: ['bad']"
    assert view.outputs == {"g": "G", "gn": "GN"}


# -- lost workers ------------------------------------------------------------------------------


def two_workers(c: Cluster) -> None:
    """w1 beats every second (lost after 3 s of silence), w2 never times out."""
    c.register("w1", interval=1)
    c.submit("r1", n("a"))
    c.register("w2", at=0.1)


def test_silent_worker_is_lost_and_its_attempt_redispatched_elsewhere() -> None:
    c = Cluster()
    c.register("w1", interval=1)
    c.submit("r1", n("a"), n("b", after=("a",)))
    w, a1 = only(c.tick(0))
    assert w == "w1"
    c.sched.accepted(a1.ref, 0.2)
    c.register("w2", at=0.5)
    d = c.tick(3)
    assert lost(d) == []
    assert d.assign == {}
    d = c.tick(3.01)
    assert lost(d) == ["w1"]
    w, a2 = only(d)
    assert (w, a2.ref.attempt) == ("w2", 2)
    node = c.node("r1", "a")
    assert (node.status, node.attempt, node.worker, node.system_retries) == ("placed", 2, "w2", 1)
    assert "w1" not in c.pool
    assert c.reserved_keys() == {a2.ref}


def test_heartbeats_keep_a_worker_alive() -> None:
    c = Cluster()
    c.register("w1", interval=1)
    c.submit("r1", n("a"))
    _, a = only(c.tick(0))
    for t in (2, 4, 6, 8):
        c.beat("w1", t, running=(a.ref,))
        assert lost(c.tick(t + 2.5)) == []
    assert c.node("r1", "a").status == "running", "a listed placed attempt has started"


def test_outcome_of_a_superseded_attempt_is_ignored() -> None:
    c = Cluster()
    c.register("w1", interval=1)
    c.submit("r1", n("a", outputs=("o",)))
    _, a1 = only(c.tick(0))
    c.register("w2", at=0.5)
    _, a2 = only(c.tick(4))
    c.succeed(a1, "w1", 5, value="stale")
    assert c.node("r1", "a").status == "placed"
    assert c.view("r1").outputs == {}
    c.fail(a1, "w1", 5)
    assert c.node("r1", "a").status == "placed"
    c.succeed(a2, "w2", 6, value="fresh")
    assert c.view("r1").outputs == {"o": "fresh"}
    assert c.view("r1").status == "succeeded"


def test_node_fails_with_worker_lost_beyond_the_system_retry_budget() -> None:
    c = Cluster(system_retries=1)
    c.register("w1", interval=1)
    c.submit("r1", n("a"))
    _, _a1 = only(c.tick(0))
    c.register("w2", at=1, interval=1)
    w, _a2 = only(c.tick(3.5))
    assert (w, c.node("r1", "a").system_retries) == ("w2", 1)
    c.register("w3", at=5)
    d = c.tick(7)
    assert lost(d) == ["w2"]
    assert d.assign == {}
    assert d.finished == ["r1"]
    node = c.node("r1", "a")
    assert node.status == "failed"
    assert node.system_retries == 2
    assert node.error is not None
    assert node.error.type == "WorkerLost"
    assert node.error.message == "worker w2 missed 3 heartbeats"


def test_deregistered_worker_loses_its_attempts_at_once(c: Cluster) -> None:
    c.register("w1")
    c.submit("r1", n("a"))
    _, _a1 = only(c.tick(0))
    c.register("w2", at=1)
    c.sched.worker_left("w1", "deregistered", 2)
    d = c.tick(2)
    assert lost(d) == ["w1"]
    w, a2 = only(d)
    assert (w, a2.ref.attempt) == ("w2", 2)
    assert c.node("r1", "a").reason == ""


def test_agent_restart_loses_the_attempts_it_does_not_list(c: Cluster) -> None:
    c.register("w1", cpu=8)
    c.submit("r1", n("a"), n("b"))
    placed = by_node(c.tick(0))
    kept = placed["a"][1].ref
    c.beat("w1", 5, started_at=2.0, running=(kept,))
    d = c.tick(5)
    assert lost(d) == ["w1"]
    w, b2 = only(d)
    assert (w, b2.ref.key) == ("w1", "r1.b.2")
    assert c.node("r1", "b").system_retries == 1
    a = c.node("r1", "a")
    assert (a.status, a.attempt, a.system_retries) == ("running", 1, 1)
    assert c.reserved_keys() == {kept, b2.ref}
    c.succeed(placed["a"][1], "w1", 6)
    assert c.node("r1", "a").status == "succeeded"


def test_agent_cancelling_on_its_own_replaces_the_node_at_once(c: Cluster) -> None:
    c.register("w1")
    c.submit("r1", n("a"))
    w, a1 = only(c.tick(0))
    out = Outcome(
        ref=a1.ref,
        worker=w,
        status="cancelled",
        error=ErrorInfo(type="AttemptCancelled", message="agent stopping"),
        started_at=0,
        finished_at=1,
    )
    c.sched.outcome(out, 1)
    node = c.node("r1", "a")
    assert (node.status, node.system_retries, node.reason) == ("ready", 1, "cancelled on w1")
    assert keys(c.tick(1)) == {"r1.a.2"}


# -- rejects -----------------------------------------------------------------------------------


def test_capacity_reject_puts_the_node_back_and_places_it_again(c: Cluster) -> None:
    c.register("w1")
    c.submit("r1", n("a"))
    w, a1 = only(c.tick(0))
    c.reject(a1, w, 1)
    node = c.node("r1", "a")
    assert (node.status, node.reason) == ("ready", "rejected by w1: no")
    assert c.reserved_keys() == set()
    assert c.sched.in_flight == 0
    w, a2 = only(c.tick(1))
    assert (w, a2.ref.attempt) == ("w1", 2)
    c.succeed(a2, w, 2)
    assert c.view("r1").status == "succeeded"


def test_node_fails_after_max_rejects() -> None:
    c = Cluster(max_rejects=3)
    c.register("w1")
    c.submit("r1", n("a"))
    for step in range(3):
        w, a = only(c.tick(step))
        assert a.ref.attempt == step + 1
        c.reject(a, w, step + 0.5)
    view = c.view("r1")
    assert view.status == "failed"
    node = view.node("a")
    assert node.status == "failed"
    assert node.error is not None
    assert node.error.type == "Rejected"
    assert c.tick(5).assign == {}


def test_reject_of_a_superseded_attempt_is_ignored(c: Cluster) -> None:
    c.register("w1")
    c.submit("r1", n("a"))
    w, a1 = only(c.tick(0))
    c.reject(a1, w, 1)
    w, a2 = only(c.tick(1))
    c.reject(a1, w, 2)
    assert c.node("r1", "a").status == "placed"
    assert c.reserved_keys() == {a2.ref}


# -- cancelling and timeouts -------------------------------------------------------------------


def test_cancel_run_cancels_in_flight_and_pending_nodes(c: Cluster) -> None:
    c.register("w1", cpu=2)
    c.register("w2", cpu=2)
    c.submit("r1", n("a", cpu=2), n("b", cpu=2), n("c", cpu=2), n("d", after=("a",)))
    placed = by_node(c.tick(0))
    assert len(placed) == 2
    assert c.sched.cancel_run("r1", "user asked", 1) is True
    d = c.sched.take()
    assert d.finished == ["r1"]
    assert cancels(d) == {w: {a.ref.key} for w, a in placed.values()}
    assert {reason for batch in d.cancel.values() for _, reason in batch} == {"user asked"}
    view = c.view("r1")
    assert view.status == "cancelled"
    assert view.error == "user asked"
    assert view.finished_at == 1
    assert {v.status for v in view.nodes} == {"cancelled"}
    assert c.sched.in_flight == 0
    assert c.reserved_keys() == {a.ref for _, a in placed.values()}, "held until stopped"
    assert c.sched.cancel_run("r1", "again", 2) is False
    assert c.sched.cancel_run("nope", "", 2) is False
    (w_a, a), (w_b, b) = placed["a"], placed["b"]
    c.cancelled(a, w_a, 3)
    assert c.reserved_keys() == {b.ref}
    c.succeed(b, w_b, 3)  # it ended before the cancel reached it
    assert c.reserved_keys() == set()
    assert c.view("r1").status == "cancelled"
    assert c.tick(3).assign == {}


def test_cancel_without_reason_says_cancelled(c: Cluster) -> None:
    c.register("w1")
    c.submit("r1", n("a"))
    c.sched.cancel_run("r1", "", 0)
    assert c.view("r1").error == "cancelled"


def test_run_timeout_fails_the_run_at_tick(c: Cluster) -> None:
    c.register("w1")
    c.submit("r1", n("a"), n("b", after=("a",)), timeout=5, at=10)
    _w, a = only(c.tick(10))
    assert c.tick(14.9).finished == []
    d = c.tick(15)
    assert d.finished == ["r1"]
    assert cancels(d) == {"w1": {a.ref.key}}
    view = c.view("r1")
    assert view.status == "failed"
    assert view.error == "run timed out after 5 s"
    assert c.status("r1") == {"a": "cancelled", "b": "skipped"}
    assert c.reserved_keys() == {a.ref}, "held until the agent has stopped it"
    c.beat("w1", 15.5, running=[a.ref])
    assert c.reserved_keys() == {a.ref}, "still listed: still running"
    c.cancelled(a, "w1", 16)
    assert c.reserved_keys() == set()


def test_forget_drops_only_finished_runs(c: Cluster) -> None:
    c.register("w1")
    c.submit("r1", n("a"))
    c.sched.forget("r1")
    assert "r1" in c.sched.runs
    c.sched.cancel_run("r1", "", 1)
    c.sched.forget("r1")
    assert "r1" not in c.sched.runs


# -- heartbeat reconciliation ------------------------------------------------------------------


def test_heartbeat_listing_an_attempt_of_a_finished_run_cancels_it(c: Cluster) -> None:
    c.register("w1")
    c.submit("r1", n("a"))
    w, a = only(c.tick(0))
    c.succeed(a, w, 1)
    c.sched.take()
    c.beat("w1", 2, running=(a.ref,))
    assert cancels(c.sched.take()) == {"w1": {"r1.a.1"}}


def test_heartbeat_listing_an_attempt_of_an_unknown_run_cancels_it(c: Cluster) -> None:
    c.register("w1")
    ghost = AttemptRef(run_id="gone", node_id="x", attempt=3)
    c.beat("w1", 1, running=(ghost,))
    d = c.sched.take()
    assert d.cancel == {"w1": [(ghost, "stale attempt")]}
    assert c.reserved_keys() == set()


def test_heartbeat_listing_a_superseded_attempt_cancels_it() -> None:
    c = Cluster()
    c.register("w1", interval=1)
    c.submit("r1", n("a"))
    _, a1 = only(c.tick(0))
    c.register("w2", at=1)
    _, a2 = only(c.tick(4))
    c.register("w1", at=5, interval=1, running=(a1.ref,))
    d = c.sched.take()
    assert cancels(d) == {"w1": {"r1.a.1"}}
    assert c.reserved_keys() == {a2.ref}


def test_heartbeat_listing_an_attempt_of_a_forgotten_run_cancels_it(c: Cluster) -> None:
    c.register("w1")
    c.submit("r1", n("a"))
    _w, a = only(c.tick(0))
    c.sched.cancel_run("r1", "", 1)
    c.sched.forget("r1")
    c.sched.take()
    c.beat("w1", 2, running=(a.ref,))
    assert cancels(c.sched.take()) == {"w1": {"r1.a.1"}}


def test_lost_worker_coming_back_with_its_attempt_is_adopted() -> None:
    c = Cluster()
    c.register("w1", interval=1)
    c.submit("r1", n("a", cpu=3), n("b", cpu=3))
    _w, a1 = only(c.tick(0))
    assert lost(c.tick(3.5)) == ["w1"]
    assert c.node("r1", a1.ref.node_id).status == "ready"
    c.beat("w1", 4, running=(a1.ref,))
    d = c.tick(4)
    assert d.cancel == {}
    node = c.node("r1", a1.ref.node_id)
    assert (node.status, node.attempt, node.worker) == ("running", 1, "w1")
    assert c.pool.reservation(a1.ref) is not None
    assert d.assign == {}, "the adopted attempt fills the worker"
    c.succeed(a1, "w1", 5)
    assert c.node("r1", a1.ref.node_id).status == "succeeded"


# -- restore after a coordinator restart -------------------------------------------------------


def restored_run(c: Cluster, now: float = 100.0, grace: float = 10.0) -> AttemptRef:
    """r1: a succeeded (output av=1), b running on w1 (attempt 2), c waits for b."""
    dag = Dag(
        nodes=(
            n("a", outputs=("av",)),
            n("b", inputs={"v": "av"}, outputs=("bv",), cpu=2),
            n("c", inputs={"v": "bv"}),
        )
    )
    submit = Submit(run_id="r1", dag=dag)
    view = RunView(
        run_id="r1",
        submitted_at=50,
        nodes=(
            NodeView(id="a", task=TASK, status="succeeded", attempt=1, worker="w1"),
            NodeView(id="b", task=TASK, status="running", attempt=2, worker="w1", started_at=60),
            NodeView(id="c", task=TASK, status="pending"),
        ),
        outputs={"av": 1},
    )
    c.sched.restore(submit, view, now, grace)
    return AttemptRef(run_id="r1", node_id="b", attempt=2)


def test_restored_attempt_is_adopted_when_its_worker_lists_it(c: Cluster) -> None:
    ref = restored_run(c)
    assert c.sched.in_flight == 1
    c.register("w1", at=101, cpu=4, running=(ref,))
    d = c.tick(101)
    assert d.assign == {}
    assert d.cancel == {}
    placement = c.pool.reservation(ref)
    assert placement is not None
    assert placement.worker == "w1"
    assert c.pool.usage("w1").cpu_free == 2
    assert c.tick(200).assign == {}, "an adopted attempt is not run again after the grace"
    node = c.node("r1", "b")
    assert (node.status, node.attempt, node.system_retries) == ("running", 2, 0)
    c.succeed(Assignment(ref=ref, task_name=TASK, request=ResourceRequest()), "w1", 201, 7)
    _, nxt = only(c.tick(201))
    assert nxt.kwargs == {"v": 7}
    assert c.reserved_keys() == {nxt.ref}


def test_restored_attempt_listed_by_another_worker_is_tracked_on_that_worker(
    c: Cluster,
) -> None:
    """The agent's word wins over the stored record: its outcome counts, the run goes on."""
    ref = restored_run(c)
    c.register("w2", at=101, cpu=4, running=(ref,))
    assert c.tick(101).assign == {}
    placement = c.pool.reservation(ref)
    assert placement is not None
    assert placement.worker == "w2"
    assert c.node("r1", "b").worker == "w2"
    c.succeed(Assignment(ref=ref, task_name=TASK, request=ResourceRequest()), "w2", 102, 7)
    _, nxt = only(c.tick(102))
    assert nxt.kwargs == {"v": 7}


def test_restored_attempt_adopted_from_a_heartbeat(c: Cluster) -> None:
    ref = restored_run(c)
    c.register("w1", at=101, cpu=4)
    assert c.pool.reservation(ref) is None
    c.beat("w1", 102, running=(ref,))
    assert c.pool.reservation(ref) is not None
    assert c.tick(200).assign == {}


def test_restored_attempt_nobody_lists_is_rerun_after_grace(c: Cluster) -> None:
    ref = restored_run(c, now=100, grace=10)
    c.register("w1", at=101, cpu=4)
    c.beat("w1", 105)
    assert c.tick(109.9).assign == {}
    w, again = only(c.tick(110))
    assert (w, again.ref.attempt, again.kwargs) == ("w1", 3, {"v": 1})
    node = c.node("r1", "b")
    assert node.system_retries == 1
    assert c.sched.in_flight == 1
    assert c.pool.reservation(ref) is None


def test_restored_ready_nodes_are_queued_again(c: Cluster) -> None:
    dag = Dag(nodes=(n("a", outputs=("av",)), n("b", inputs={"v": "av"})))
    view = RunView(
        run_id="r1",
        submitted_at=0,
        nodes=(
            NodeView(id="a", task=TASK, status="succeeded", attempt=1),
            NodeView(id="b", task=TASK, status="placed", attempt=1),
        ),
        outputs={"av": "x"},
    )
    c.sched.restore(Submit(run_id="r1", dag=dag), view, 10, 5)
    c.register("w1", at=10)
    _, b = only(c.tick(10))
    assert (b.ref.attempt, b.kwargs) == (2, {"v": "x"})


# -- draining ----------------------------------------------------------------------------------


def test_draining_worker_takes_nothing_new_but_finishes_its_attempt(c: Cluster) -> None:
    c.register("w1", cpu=2)
    c.submit("r1", n("a", cpu=2), n("b", cpu=2))
    w, first = only(c.tick(0))
    c.sched.accepted(first.ref, 0.5)
    c.beat("w1", 1, running=(first.ref,), draining=True)
    assert "w1" not in c.pool
    d = c.tick(1)
    assert d.assign == {}
    assert d.cancel == {}
    c.succeed(first, w, 2, value=None)
    assert c.node("r1", first.ref.node_id).status == "succeeded"
    assert c.tick(2).assign == {}, "capacity released on a draining worker is not reused"
    c.register("w2", at=3, cpu=2)
    w2, second = only(c.tick(3))
    assert w2 == "w2"
    c.succeed(second, w2, 4)
    assert c.view("r1").status == "succeeded"


def test_draining_worker_leaving_loses_nothing_finished(c: Cluster) -> None:
    c.register("w1", cpu=2)
    c.submit("r1", n("a", cpu=2))
    w, a = only(c.tick(0))
    c.beat("w1", 1, running=(a.ref,), draining=True)
    c.succeed(a, w, 2)
    c.sched.worker_left("w1", "deregistered", 3)
    d = c.tick(3)
    assert lost(d) == ["w1"]
    assert c.view("r1").status == "succeeded"


# -- assignments lost in transit ---------------------------------------------------------------


def test_placed_attempt_its_worker_never_reports_is_placed_again() -> None:
    c = Cluster()
    c.register("w1", interval=1)
    c.submit("r1", n("a"))
    _, _lost_in_transit = only(c.tick(0))
    attempts = []
    for t in range(1, 121):
        c.beat("w1", t, running=())
        attempts += [a.ref.attempt for a in c.tick(t).assign.get("w1", [])]
    assert attempts, "two minutes of heartbeats without the attempt, and it is still placed"
    assert attempts[0] == 2


def test_heartbeat_older_than_a_failure_outcome_does_not_resurrect_the_attempt() -> None:
    c = Cluster()
    c.register("w1", interval=1)
    c.submit("r1", n("a", retry=RetryPolicy(max_retries=1, delay=5)))
    w, a1 = only(c.tick(0))
    c.sched.accepted(a1.ref, 0.5)
    # Outcomes travel on JetStream, heartbeats on core NATS: they can arrive crossed.
    c.fail(a1, w, 1)
    c.beat("w1", 1.1, running=(a1.ref,))
    retries: list[AttemptRef] = []
    for t in range(2, 15):
        c.beat("w1", t, running=tuple(retries))
        for a in c.tick(t).assign.get("w1", []):
            c.sched.accepted(a.ref, t)
            retries.append(a.ref)
    assert [r.attempt for r in retries] == [2]


def test_outcome_from_a_lost_worker_before_the_node_is_placed_again_counts(c: Cluster) -> None:
    c.register("w1", cpu=2, interval=1)
    c.submit("r1", n("a", cpu=2, outputs=("o",)))
    _w, a1 = only(c.tick(0))
    assert lost(c.tick(3.5)) == ["w1"]
    assert c.node("r1", "a").status == "ready"
    # The agent ran on behind a partition; its outcome still arrives through JetStream.
    c.succeed(a1, "w1", 4, value="late but good")
    view = c.view("r1")
    assert view.status == "succeeded"
    assert view.outputs == {"o": "late but good"}
    assert c.sched.in_flight == 0
    assert c.reserved_keys() == set()


def test_redelivered_failure_outcome_is_not_counted_twice(c: Cluster) -> None:
    c.register("w1")
    c.submit("r1", n("a", retry=RetryPolicy(max_retries=1, delay=5)))
    w, a1 = only(c.tick(0))
    c.fail(a1, w, 1)
    assert c.node("r1", "a").status == "ready"
    # JetStream delivers at least once: the same outcome again (e.g. its ack was lost).
    c.fail(a1, w, 2)
    assert c.node("r1", "a").status == "ready"
    assert keys(c.tick(6)) == {"r1.a.2"}


def test_adverts_from_an_older_agent_under_a_used_name_are_ignored(c: Cluster) -> None:
    c.register("w1", started_at=5.0)
    c.submit("r1", n("a"))
    _, a = only(c.tick(0))
    c.sched.accepted(a.ref, 0.1)
    c.register("w1", at=0.2, started_at=2.0)  # a second host misconfigured with this name
    d = c.sched.take()
    assert d.name_clashes == ["w1"]
    assert lost(d) == []
    assert c.node("r1", "a").status == "running"
    assert c.sched.workers["w1"].started_at == 5.0


# -- checkpointing -----------------------------------------------------------------------------


class _Store:
    """A RunStore stand-in that refuses to write the runs in ``refuse``."""

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.saved: list[str] = []
        self.turns = Turns()

    async def save_many(self, items: list[tuple[Submit, RunView, bool]]) -> dict[str, Exception]:
        failed: dict[str, Exception] = {}
        for _, view, _ in items:
            if view.run_id in self.refuse:
                failed[view.run_id] = ValueError("payload too large")
            else:
                self.saved.append(view.run_id)
        return failed


class _Msg:
    def __init__(self) -> None:
        self.acked = False

    async def ack(self) -> None:
        self.acked = True


async def test_a_run_the_store_refuses_holds_back_only_its_own_messages(c: Cluster) -> None:
    c.register("w1")
    c.submit("good", n("a"))
    c.submit("bad", n("a"))
    d = c.tick(0)
    store = _Store(refuse={"bad"})
    points = Checkpointer(store, c.sched, min_age=0.0, clock=lambda: 0.0)  # type: ignore[arg-type]
    good, bad = _Msg(), _Msg()
    points.mark(d.changed, d.finished, [(good, {"good"}), (bad, {"bad"})])  # type: ignore[list-item]
    await points.flush()
    assert store.saved == ["good"]
    assert (good.acked, bad.acked) == (True, False)
    store.refuse.clear()
    await points.flush()
    assert store.saved == ["good", "bad"]
    assert bad.acked
