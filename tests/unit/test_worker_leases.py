"""Worker leases (``coordinator/scheduling/leases.py``): when every worker is busy, up to
``pipeline`` attempts of one shape are sent to a worker to run one after another under one
reservation, released when the last has ended; never more than the worker has."""

from __future__ import annotations

from coordinator.scheduling.leases import KNOWN_SHAPES, START_DEPTH, Leases
from shared.resources import ResourceRequest
from shared.wire.protocol import Assignment, AttemptRef
from tests.unit.test_scheduler import Cluster, n


def sent(cluster: Cluster, at: float) -> list[tuple[str, Assignment]]:
    d = cluster.tick(at)
    cluster.sched.validate_state()
    return [(w, a) for w, batch in d.assign.items() for a in batch]


def cpu_reserved(cluster: Cluster, worker: str) -> float:
    return cluster.pool.usage(worker).cpu_reserved


def test_a_busy_worker_gets_a_lease_of_attempts_that_share_one_reservation() -> None:
    c = Cluster(pipeline=3)
    c.register("w", cpu=1)
    c.submit("r", *(n(f"t{i}", cpu=1) for i in range(5)))
    first = sent(c, 1.0)
    assert [a.ref.node_id for _, a in first] == ["t0", "t1", "t2"]
    lease = first[0][1].ref
    assert {a.lease for _, a in first} == {lease}
    assert cpu_reserved(c, "w") == 1  # one reservation, not three
    assert c.reserved_keys() == {lease}
    c.succeed(first[0][1], "w", 2.0)  # the lease's first attempt ends: its reservation stays
    again = sent(c, 2.0)
    assert [a.ref.node_id for _, a in again] == ["t3"]
    assert again[0][1].lease == lease
    assert c.reserved_keys() == {lease}
    for _, a in [*first[1:], *again]:
        c.succeed(a, "w", 3.0)
    last = sent(c, 3.0)
    assert [a.ref.node_id for _, a in last] == ["t4"]  # a fresh placement: a new lease
    assert last[0][1].lease == last[0][1].ref
    c.succeed(last[0][1], "w", 4.0)
    sent(c, 4.0)
    assert c.status("r") == dict.fromkeys(("t0", "t1", "t2", "t3", "t4"), "succeeded")
    assert c.reserved_keys() == set()
    assert cpu_reserved(c, "w") == 0


def test_an_idle_worker_is_placed_on_before_any_lease_is_topped_up() -> None:
    c = Cluster(pipeline=4)
    c.register("a", cpu=1)
    c.register("b", cpu=1)
    c.submit("r", *(n(f"t{i}", cpu=1) for i in range(2)))
    assert {w for w, _ in sent(c, 1.0)} == {"a", "b"}


def test_a_busy_group_of_higher_priority_stops_lower_groups_from_topping_up() -> None:
    c = Cluster(pipeline=3)
    c.register("w", cpu=2)
    c.submit("small", *(n(f"s{i}", cpu=1) for i in range(3)), at=0.0)
    one = sent(c, 1.0)  # two small ones fill the worker, the third joins a lease
    assert len(one) == 3
    c.submit("big", n("b", cpu=2), priority=5)
    for _, a in one[:2]:
        c.succeed(a, "w", 2.0)
    c.submit("more", *(n(f"m{i}", cpu=1) for i in range(3)))
    # The free core is backfilled as before (aging bounds that), but nothing more is queued
    # on leases past the big node, which waits for the whole worker.
    assert [a.ref.node_id for _, a in sent(c, 2.0)] == ["m0"]
    assert c.node("big", "b").reason.startswith("busy")


def test_gpu_requests_are_not_leased() -> None:
    c = Cluster(pipeline=3)
    c.register("g", cpu=4, gpus=1)
    c.submit("r", *(n(f"t{i}", cpu=1, gpus=1) for i in range(3)))
    (only,) = sent(c, 1.0)
    assert only[1].lease is None


def test_a_lost_worker_takes_its_leases_and_their_attempts_are_placed_again() -> None:
    c = Cluster(pipeline=3, heartbeat_misses=2)
    c.register("w", cpu=1, interval=1.0)
    c.register("v", cpu=1, interval=1000.0)
    c.submit("r", *(n(f"t{i}", cpu=1) for i in range(6)))
    first = sent(c, 0.5)
    on_w = [a for w, a in first if w == "w"]
    assert len(on_w) == 3
    again = sent(c, 5.0)  # w is silent past two intervals: lost
    assert all(w == "v" for w, _ in again)
    assert all(c.pool.reservation(a.ref) is None for a in on_w)
    assert "w" not in {p.worker for p in c.pool.reservations()}


def test_a_cancelled_run_keeps_its_lease_reserved_until_the_agent_reports_each_ended() -> None:
    c = Cluster(pipeline=3)
    c.register("w", cpu=1)
    c.submit("r", *(n(f"t{i}", cpu=1) for i in range(3)))
    first = sent(c, 1.0)
    lease = first[0][1].lease
    assert c.sched.cancel_run("r", "no longer wanted", 2.0)
    c.sched.tick(2.0)
    d = c.sched.take()
    assert sorted(ref.node_id for ref, _ in d.cancel["w"]) == ["t0", "t1", "t2"]
    c.cancelled(first[0][1], "w", 3.0)
    c.cancelled(first[1][1], "w", 3.0)
    c.sched.validate_state()
    assert c.reserved_keys() == {lease}  # the third may still run there
    c.cancelled(first[2][1], "w", 3.0)
    c.sched.validate_state()
    assert c.reserved_keys() == set()


def test_a_rejected_member_leaves_its_lease() -> None:
    c = Cluster(pipeline=2)
    c.register("w", cpu=1)
    c.submit("r", *(n(f"t{i}", cpu=1) for i in range(2)))
    first = sent(c, 1.0)
    c.reject(first[1][1], "w", 1.5)
    c.sched.validate_state()
    c.succeed(first[0][1], "w", 2.0)
    c.sched.validate_state()
    (retry,) = sent(c, 2.0)
    assert retry[1].ref.node_id == "t1"
    assert retry[1].ref.attempt == 2


def ref(i: int) -> AttemptRef:
    return AttemptRef(run_id="r", node_id=f"n{i}", attempt=1)


def test_leases_take_members_up_to_their_depth_and_release_on_the_last() -> None:
    leases = Leases(depth=2)
    shape = (ResourceRequest(cpu=1), "t")
    a = leases.open(ref(0), "w", shape)
    assert leases.room(shape) is a
    leases.join(a, ref(1))
    assert leases.room(shape) is None  # full
    assert leases.leave(ref(0)) is None  # one member left: still reserved
    assert leases.room(shape) is a  # room again
    assert leases.leave(ref(1)) == ref(0)  # the last: release the reservation keyed ref(0)
    assert leases.room(shape) is None
    assert leases.leave(ref(2)) is None  # of no lease


def test_a_closed_workers_leases_take_no_member() -> None:
    leases = Leases(depth=3)
    shape = (ResourceRequest(cpu=1), "t")
    leases.open(ref(0), "w", shape)
    leases.close_worker("w")
    assert leases.room(shape) is None
    assert leases.leave(ref(0)) == ref(0)


def test_pipelining_is_for_requests_without_gpus_and_a_depth_over_one() -> None:
    assert Leases(3).eligible(ResourceRequest(cpu=1))
    assert not Leases(3).eligible(ResourceRequest(cpu=1, gpus=1))
    assert not Leases(1).eligible(ResourceRequest(cpu=1))


def test_a_lease_is_as_deep_as_about_20_ms_of_its_shapes_work() -> None:
    """Quick tasks fill the configured depth, so the agent never waits for the coordinator;
    long ones get one waiting behind the running one, so work does not queue behind a busy
    worker while another frees up; an unseen shape starts at ``START_DEPTH``."""
    leases = Leases(depth=16)
    quick, slow = (ResourceRequest(cpu=1), "quick"), (ResourceRequest(cpu=1), "slow")
    assert leases.depth_of(quick) == START_DEPTH
    a, b = leases.open(ref(0), "w", quick), leases.open(ref(1), "v", slow)
    leases.observe(ref(0), 0.0002)
    leases.observe(ref(1), 3.0)
    assert leases.depth_of(quick) == 16
    assert leases.depth_of(slow) == 2
    leases.join(b, ref(2))
    assert leases.room(slow) is None  # one running, one waiting: full
    for i in range(3, 18):
        if leases.room(quick) is a:
            leases.join(a, ref(i))
    assert len(a.members) == 16
    assert Leases(depth=3).depth_of(quick) == 3  # the configured depth bounds it
    five_ms = Leases(depth=16)
    five_ms.open(ref(0), "w", quick)
    five_ms.observe(ref(0), 0.005)
    assert five_ms.depth_of(quick) == 5


def test_a_lease_whose_shape_turns_out_long_takes_no_more_members_until_it_drains() -> None:
    leases = Leases(depth=16)
    shape = (ResourceRequest(cpu=1), "t")
    lease = leases.open(ref(0), "w", shape)
    for i in (1, 2):
        leases.join(lease, ref(i))
    assert leases.room(shape) is lease  # 3 of START_DEPTH: not seen to end yet
    for i in range(3):
        leases.observe(ref(i), 2.0)
    assert leases.room(shape) is None  # 3 members, and 2 s tasks get depth 2
    assert leases.leave(ref(0)) is None
    assert leases.room(shape) is None  # 2 members: full
    leases.leave(ref(1))
    assert leases.room(shape) is lease  # 1 member: room for one more


def test_durations_are_kept_for_a_bounded_number_of_shapes() -> None:
    """A peer submitting ever new request shapes must not grow the coordinator's memory;
    the shape heard of longest ago is forgotten (and starts again at ``START_DEPTH``)."""
    leases = Leases(depth=16)
    shapes = [(ResourceRequest(cpu=1, ram_mb=i + 1), "t") for i in range(KNOWN_SHAPES + 1)]
    for i, shape in enumerate(shapes):
        leases.open(ref(i), "w", shape)
        leases.observe(ref(i), 0.0001)
    assert len(leases._took) == KNOWN_SHAPES
    assert leases.depth_of(shapes[0]) == START_DEPTH
    assert leases.depth_of(shapes[-1]) == 16
