"""A task is only sent to a worker known to have it (coordinator/scheduling/tasks.py).

The coordinator may miss an agent's Register (it started later, restarted, or the core
NATS message was lost) and hear only its heartbeats. Such a worker is sent nothing until
its task set is known: from the digest every heartbeat carries, when another worker
registered that set, or else from the Register it is asked for at every heartbeat.
Agents older than the digest (``older``) send heartbeats without one; they are asked too.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest

from coordinator.scheduling.tasks import TaskCatalog
from shared.resources import ResourceRequest, WorkerSpec
from shared.wire import protocol
from shared.wire.protocol import Heartbeat
from tests.unit.test_scheduler import SLOW, TASK, Cluster, lost, n, only

OTHER = "app:other"
MISSING = "app:missing"
AGENTS = pytest.mark.parametrize("older", [False, True], ids=["agent", "older-agent"])
_seq = itertools.count(1)


def beat(c: Cluster, name: str, at: float, tasks: Iterable[str] | None = (TASK,)) -> None:
    """A heartbeat proving ``tasks`` (None: from an agent older than task digests)."""
    spec = c.specs[name]
    proof = {} if tasks is None else {"tasks_digest": protocol.task_digest(tasks)}
    msg = Heartbeat(
        worker=name,
        started_at=c.started[name],
        seq=next(_seq),
        interval=c.intervals[name],
        capacity=spec,
        cpu_percent=0.0,
        available_ram_mb=spec.ram_mb,
        **proof,
    )
    c.sched.heartbeat(msg, at)


def heard_only(
    c: Cluster,
    name: str,
    at: float,
    tasks: Iterable[str] | None = (TASK,),
    *,
    interval: float = SLOW,
) -> None:
    """An agent whose Register the coordinator missed: only its heartbeats arrive."""
    c.specs[name] = WorkerSpec(name=name, cpu=4, ram_mb=8192)
    c.started[name], c.intervals[name] = 1.0, interval
    beat(c, name, at, tasks)


def shown(older: bool) -> tuple[str, ...] | None:
    """What the heartbeats of an agent with TASK prove: nothing, if it is an older one."""
    return None if older else (TASK,)


# -- the wire ----------------------------------------------------------------------------------


def test_the_digest_is_of_the_set_and_an_older_heartbeat_without_one_still_decodes() -> None:
    digest = protocol.task_digest
    assert digest(["b", "a", "a"]) == digest(("a", "b")) != digest(("a",))
    spec = WorkerSpec(name="w1", cpu=1, ram_mb=1)
    fields = {"worker": "w1", "started_at": 1.0, "seq": 1, "interval": 1.0, "capacity": spec}
    older = protocol.encode(Heartbeat(**fields, cpu_percent=0.0, available_ram_mb=1))
    older = older.replace(b',"tasks_digest":null', b"")
    assert b"tasks_digest" not in older
    assert protocol.decode_as(older, Heartbeat).tasks_digest is None


# -- who gets what ------------------------------------------------------------------------------


@AGENTS
def test_a_worker_known_only_from_heartbeats_gets_nothing_until_it_registers(older: bool) -> None:
    c = Cluster()
    heard_only(c, "w1", 0, shown(older))
    c.submit("r1", n("a"))
    d = c.tick(0)
    assert d.assign == {}
    assert c.node("r1", "a").status == "ready", "its Register is on the way: the run waits"
    assert d.reregister == ["w1"]
    c.register("w1", 0.5)
    w, a = only(c.tick(0.5))
    assert (w, a.ref.key) == ("w1", "r1.a.1")
    beat(c, "w1", 1, shown(older))
    assert c.tick(1).reregister == []


def test_it_is_asked_again_at_every_heartbeat_so_a_lost_request_heals() -> None:
    c = Cluster()
    heard_only(c, "w1", 0)
    assert c.tick(0).reregister == ["w1"]
    beat(c, "w1", 1)  # the request, or the Register it asked for, was lost
    assert c.tick(1).reregister == ["w1"]
    c.register("w1", 1.5)
    beat(c, "w1", 2)
    assert c.tick(2).reregister == []


def test_a_set_some_worker_registered_is_known_by_its_digest_alone() -> None:
    c = Cluster()
    c.register("w1")
    heard_only(c, "w2", 0)  # one more host of the same application
    c.submit("r1", n("a", cpu=3), n("b", cpu=3))
    d = c.tick(0)
    assert d.reregister == []
    assert sorted(d.assign) == ["w1", "w2"]


def test_a_heartbeat_proving_another_set_asks_for_the_register() -> None:
    c = Cluster()
    c.register("w1")
    beat(c, "w1", 1, (TASK, OTHER))  # its set changed without a Register reaching us
    assert c.tick(1).reregister == ["w1"]


def test_an_older_agent_is_not_asked_once_its_set_is_known() -> None:
    c = Cluster()
    c.register("w1")
    beat(c, "w1", 1, None)
    assert c.tick(1).reregister == []


def test_an_unknown_set_selects_no_worker_and_a_missing_task_selects_none() -> None:
    catalog = TaskCatalog()
    spec = WorkerSpec(name="w1", cpu=1, ram_mb=1)
    untold = catalog.labelled(spec, None)
    told = catalog.labelled(spec, frozenset({TASK}))
    wanted = catalog.request(ResourceRequest(), TASK)
    missing = catalog.request(ResourceRequest(), MISSING)
    assert [s.matches(told.labels) for s in wanted.required] == [True]
    assert [s.matches(untold.labels) for s in wanted.required] == [False]
    assert [s.matches(told.labels) for s in missing.required] == [False]
    assert [s.matches(untold.labels) for s in missing.required] == [False]


# -- infeasible by task name -------------------------------------------------------------------


@AGENTS
def test_after_a_restart_an_unknown_task_fails_as_infeasible_with_its_name(older: bool) -> None:
    c = Cluster(warmup=5.0)
    c.sched.start(0.0)
    heard_only(c, "w1", 0.1, shown(older))
    c.submit("r1", n("a", task=MISSING), at=0.2)
    assert c.tick(0.2).assign == {}
    c.register("w1", 0.3)
    d = c.tick(5.0)
    assert d.assign == {}
    assert c.view("r1").status == "failed"
    assert c.view("r1").error == f"infeasible: a: no live worker has task {MISSING!r}"


@AGENTS
def test_a_task_no_known_worker_has_waits_a_few_intervals_for_an_untold_worker(
    older: bool,
) -> None:
    c = Cluster()
    heard_only(c, "w1", 0, shown(older), interval=1.0)
    c.submit("r1", n("a", task=MISSING))
    assert c.node("r1", "a").reason == (
        f"infeasible: no live worker has task {MISSING!r} (1 of 1 have not registered their tasks)"
    )
    beat(c, "w1", 1, shown(older))
    beat(c, "w1", 2, shown(older))
    assert c.tick(2).finished == []
    beat(c, "w1", 3, shown(older))
    assert c.tick(3.01).finished == ["r1"], "it never told: waited 3 intervals, no more"
    assert c.view("r1").error.startswith(f"infeasible: a: no live worker has task {MISSING!r}")


@AGENTS
def test_a_task_a_lost_worker_had_waits_for_it_not_for_an_untold_one(older: bool) -> None:
    c = Cluster(lost_worker_grace=30.0)
    c.register("w1", interval=1.0, tasks=(OTHER,))
    assert lost(c.tick(3.5)) == ["w1"]
    heard_only(c, "w2", 4, shown(older), interval=1.0)  # never registers
    c.submit("r1", n("a", task=OTHER), at=4)
    for at in range(4, 34):
        beat(c, "w2", at, shown(older))
        assert c.tick(at).assign == {}, "never sent to a worker not known to have it"
    assert c.view("r1").status == "running", "w1 had it moments ago"
    beat(c, "w2", 34, shown(older))
    c.tick(34)
    assert c.view("r1").status == "failed"
    assert c.view("r1").error.startswith(f"infeasible: a: no live worker has task {OTHER!r}")


# -- rejects -----------------------------------------------------------------------------------


def test_an_unknown_task_reject_does_not_count_toward_max_rejects() -> None:
    c = Cluster(max_rejects=1)
    c.register("w1")
    c.register("w2")
    c.submit("r1", n("a"))
    first, a1 = only(c.tick(0))
    c.reject(a1, first, 1, code="unknown_task")
    second, a2 = only(c.tick(1))
    assert second != first
    assert c.node("r1", "a").status == "placed"
    c.succeed(a2, second, 2)
    assert c.view("r1").status == "succeeded"
