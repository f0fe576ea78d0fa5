"""Prometheus figures of the coordinator and the agent, read from the real objects.

The pool counts its placements and its busy and infeasible answers by reason; one call per
pump pass (``coordinator.metrics.after_pass``) counts pass times and how runs and nodes
ended; the rest is read from the scheduler and the agent at scrape time. Each family is
checked through prometheus-client's own parser of the text a scrape returns.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterable

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from taskiq import InMemoryBroker, TaskiqMessage, TaskiqResult

from coordinator.metrics import PassCounts, after_pass
from coordinator.metrics_export import CoordinatorMetrics
from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.service import Coordinator, CoordinatorSettings
from shared.metrics import Buckets, missing, serve
from shared.resources import ResourceRequest, WorkerSpec
from shared.wire.protocol import AttemptRef, ErrorInfo, Outcome
from tests.natsserver import free_port
from tests.unit.test_scheduler import Cluster, n, only
from worker_agent.executor import AttemptCancelled
from worker_agent.metrics import AgentMetrics, TaskTimes
from worker_agent.service import Agent

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: Iterable[Metric]) -> Samples:
    found: Samples = {}
    for metric in metrics:
        for s in metric.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_buckets_are_cumulative_with_inf_last() -> None:
    b = Buckets((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 7.0):
        b.observe(v)
    assert b.cumulative() == [("0.1", 2.0), ("1.0", 3.0), ("+Inf", 4.0)]
    assert b.count == 4
    assert b.total == pytest.approx(7.65)


def test_the_pool_counts_placements_and_answers_by_kind_and_reason() -> None:
    pool = ResourceAwareWorkerPool([WorkerSpec(name="w", cpu=2, ram_mb=1024)])
    pool.place(ResourceRequest(cpu=2))
    pool.place(ResourceRequest(cpu=1))  # busy: the worker is full
    pool.place(ResourceRequest(cpu=8))  # infeasible
    pool.check(ResourceRequest(ram_mb=4096))  # infeasible at submit
    assert pool.check(ResourceRequest(cpu=1)) is None  # not an answer
    assert pool.placed == 1
    assert pool.answers == {
        ("busy", "cpu"): 1,
        ("infeasible", "cpu"): 1,
        ("infeasible", "ram_mb"): 1,
    }


def test_after_pass_counts_pass_times_and_how_runs_and_nodes_ended() -> None:
    c = Cluster()
    counts = PassCounts()
    c.register("w", 0.0)
    c.submit("r1", n("a"), n("b", after=("a",)), at=0.0)
    c.submit("r2", n("x"), at=0.0)
    first = c.tick(1.0)
    assigned = {a.ref.run_id: a for batch in first.assign.values() for a in batch}
    after_pass(c.sched, first, 0.002, counts)
    c.fail(assigned["r1"], "w", 2.0)  # on_error=stop: the run fails, b is skipped
    c.succeed(assigned["r2"], "w", 2.0)
    after_pass(c.sched, c.tick(2.0), 0.3, counts)
    assert counts.runs == {"failed": 1, "succeeded": 1}
    assert counts.nodes == {"failed": 1, "skipped": 1, "succeeded": 1}
    assert counts.passes.cumulative()[-1] == ("+Inf", 2.0)
    assert counts.passes.total == pytest.approx(0.302)


def test_system_retries_are_counted_when_their_run_ends() -> None:
    c = Cluster()
    counts = PassCounts()
    c.register("w1", 0.0)
    c.submit("r", n("a"), at=0.0)
    _, a = only(c.tick(1.0))
    c.sched.worker_left("w1", "deregistered", 1.5)
    c.register("w2", 1.5)
    worker, again = only(c.tick(2.0))
    c.succeed(again, worker, 3.0)
    after_pass(c.sched, c.tick(3.0), 0.001, counts)
    assert a.ref != again.ref
    assert counts.system_retries == 1


def coordinator_with_work() -> Coordinator:
    """A coordinator (no NATS needed to read it) whose scheduler has one busy worker, one
    node queued behind it at priority 5, and one running."""
    coordinator = Coordinator(CoordinatorSettings())
    sched = coordinator.scheduler
    c = Cluster()
    c.sched, c.pool = sched, sched.pool
    c.register("w", 0.0, cpu=2, gpus=2)
    c.submit("r", n("a", cpu=2, gpus=0.5), n("b", cpu=1), at=0.0, priority=5)
    sched.start(0.0)
    c.beat("w", 0.1)
    sched.tick(5.0)
    sched.take()
    return coordinator


def test_the_coordinator_page_reads_the_scheduler() -> None:
    coordinator = coordinator_with_work()
    found = samples(CoordinatorMetrics(lambda: coordinator, PassCounts()).collect())
    assert value(found, "fleet_leader") == 1
    assert value(found, "fleet_placements_total") == 1
    assert value(found, "fleet_placement_answers_total", kind="busy", reason="cpu") == 1
    assert value(found, "fleet_queue_depth", priority="5") == 1
    assert value(found, "fleet_waiting_nodes", why="busy") == 1
    assert value(found, "fleet_in_flight") == 1
    assert value(found, "fleet_workers", state="ready") == 1
    assert value(found, "fleet_runs", status="running") == 1
    assert value(found, "fleet_nodes", status="placed") == 1
    assert value(found, "fleet_capacity", worker="w", dimension="cpu") == 2
    assert value(found, "fleet_reserved", worker="w", dimension="cpu") == 2
    assert value(found, "fleet_gpu_reserved_share", worker="w", device="0", model="gpu") == 0.5
    assert value(found, "fleet_gpu_reserved_share", worker="w", device="1", model="gpu") == 0
    assert value(found, "fleet_reservations", worker="w") == 1


def test_a_standby_shows_its_totals_and_that_it_does_not_lead() -> None:
    counts = PassCounts()
    counts.runs["succeeded"] = 3
    found = samples(CoordinatorMetrics(lambda: None, counts).collect())
    assert value(found, "fleet_leader") == 0
    assert value(found, "fleet_runs_finished_total", status="succeeded") == 3
    assert not any(name == "fleet_queue_depth" for name, _ in found)


def test_pool_counts_carry_over_a_new_term() -> None:
    old = coordinator_with_work()
    current: list[Coordinator] = [old]
    page = CoordinatorMetrics(lambda: current[0], PassCounts())
    samples(page.collect())
    current[0] = coordinator_with_work()
    found = samples(page.collect())
    assert value(found, "fleet_placements_total") == 2


async def test_task_times_by_task_and_how_each_ended() -> None:
    ticks = iter([0.0, 0.25, 1.0, 3.0, 5.0, 5.5])
    times = TaskTimes(clock=lambda: next(ticks))
    for task_id, result in (
        ("1", TaskiqResult(is_err=False, return_value=1, execution_time=0)),
        ("2", TaskiqResult(is_err=True, return_value=None, execution_time=0, error=ValueError())),
        (
            "3",
            TaskiqResult(
                is_err=True, return_value=None, execution_time=0, error=AttemptCancelled()
            ),
        ),
    ):
        message = TaskiqMessage(task_id=task_id, task_name="app:t", labels={}, args=[], kwargs={})
        times.post_execute(times.pre_execute(message), result)
    assert {k: b.total for k, b in times.durations.items()} == {
        ("app:t", "succeeded"): 0.25,
        ("app:t", "failed"): 2.0,
        ("app:t", "cancelled"): 0.5,
    }


async def test_the_agent_page_reads_its_ledger_outbox_and_task_times() -> None:
    spec = WorkerSpec.model_validate(
        {"name": "a1", "cpu": 4, "ram_mb": 2048, "gpus": 1, "resources": {"licenses": 2}}
    )
    agent = Agent(InMemoryBroker(), spec)
    times = TaskTimes()
    times.durations[("app:t", "succeeded")] = Buckets((1.0,))
    times.durations[("app:t", "succeeded")].observe(0.5)
    ref = AttemptRef(run_id="r", node_id="n", attempt=1)
    agent._outbox.put(
        Outcome(
            ref=ref,
            worker="a1",
            status="failed",
            error=ErrorInfo(type="E", message="m"),
            started_at=1.0,
            finished_at=2.0,
        )
    )
    found = samples(AgentMetrics(agent, times).collect())
    assert value(found, "fleet_agent_capacity", worker="a1", dimension="licenses") == 2
    assert value(found, "fleet_agent_reserved", worker="a1", dimension="cpu") == 0
    assert value(found, "fleet_agent_gpu_reserved_share", worker="a1", device="0", model="gpu") == 0
    assert value(found, "fleet_agent_outbox_backlog", worker="a1") == 1
    assert value(found, "fleet_agent_running", worker="a1") == 0
    assert (
        value(
            found,
            "fleet_task_duration_seconds_count",
            worker="a1",
            task="app:t",
            status="succeeded",
        )
        == 1
    )
    agent._executor.close()


async def test_serve_answers_a_scrape_from_the_event_loop() -> None:
    assert missing() is None
    loop_thread: list[bool] = []

    def collect() -> Iterable[Metric]:
        loop_thread.append(asyncio.get_running_loop() is loop)
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("fleet_test_value", "a test", value=7)

    loop = asyncio.get_running_loop()
    port = free_port()
    stop = serve(port, "127.0.0.1", collect)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    finally:
        stop()
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    assert families["fleet_test_value"].samples[0].value == 7
    assert "process_cpu_seconds" in families
    assert loop_thread == [True]


def test_the_grafana_dashboard_draws_only_metrics_that_exist() -> None:
    """Every series deploy/grafana/fleet.json queries is one the pages export, and the
    scrape config names both kinds of process."""
    import json
    import re
    from pathlib import Path

    import yaml

    deploy = Path(__file__).resolve().parents[2] / "deploy"
    board = json.loads((deploy / "grafana" / "fleet.json").read_text())
    queried = {
        name
        for panel in board["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bfleet_[a-z_]+", target["expr"])
    }
    agent = Agent(InMemoryBroker(), WorkerSpec(name="a1", cpu=1))
    times = TaskTimes()
    times.durations[("t", "succeeded")] = Buckets((1.0,))
    counts = PassCounts()
    counts.runs["succeeded"] = counts.nodes["succeeded"] = 1
    exported = {
        name
        for name, _ in {
            **samples(CoordinatorMetrics(coordinator_with_work, counts).collect()),
            **samples(AgentMetrics(agent, times).collect()),
        }
    }
    agent._executor.close()
    assert len(board["panels"]) >= 12
    assert queried - exported == set()
    config = yaml.safe_load((deploy / "prometheus" / "prometheus.yml").read_text())
    assert [job["job_name"] for job in config["scrape_configs"]] == [
        "fleet-coordinator",
        "fleet-agent",
    ]
