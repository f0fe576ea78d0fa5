"""LocalFleet: the scheduler with in-process workers, on a fresh InMemoryBroker per test.

Synchronisation is by events: a task that must overlap another waits on an Event the
other sets (bounded by a timeout, so a sequential run fails instead of hanging).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import pytest
from taskiq import InMemoryBroker, TaskiqDepends

from shared.dag import Dag, Node, RetryPolicy, RunOptions
from taskiq_fleet import (
    FleetError,
    ResourceRequest,
    RunFailed,
    RunUpdate,
    current_attempt,
    current_gpu_devices,
)
from taskiq_fleet.inprocess import LocalFleet

WAIT = 5.0
"""Upper bound for anything that should happen promptly; a hang fails the test."""


@dataclass
class Probe:
    """Shared state between a test and its tasks."""

    active: int = 0
    peak: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    target: int = 2


def _scale() -> int:
    return 10


def make_broker(probe: Probe) -> InMemoryBroker:
    broker = InMemoryBroker()
    _plain_tasks(broker)
    _probe_tasks(broker, probe)
    _odd_tasks(broker)
    return broker


def _plain_tasks(broker: InMemoryBroker) -> None:
    @broker.task(task_name="t.add")
    async def add(a: int, b: int = 0) -> int:
        return a + b

    @broker.task(task_name="t.double")
    async def double(x: int) -> int:
        return 2 * x

    @broker.task(task_name="t.sum")
    async def total(values: list[int]) -> int:
        return sum(values)

    @broker.task(task_name="t.echo")
    async def echo(value: str) -> str:
        return value

    @broker.task(task_name="t.depends")
    async def scaled(x: int, scale: Annotated[int, TaskiqDepends(_scale)]) -> int:
        return x * scale


def _probe_tasks(broker: InMemoryBroker, probe: Probe) -> None:
    @broker.task(task_name="t.meet")
    async def meet(x: int) -> int:
        """Returns only once ``probe.target`` of these run at the same time."""
        probe.active += 1
        if probe.active >= probe.target:
            probe.reached.set()
        await asyncio.wait_for(probe.reached.wait(), WAIT)
        return x + 1

    @broker.task(task_name="t.count")
    async def count(x: int) -> int:
        """Records how many run at once; holds until the test opens the gate."""
        probe.active += 1
        probe.peak = max(probe.peak, probe.active)
        if probe.active >= probe.target:
            probe.reached.set()
        await asyncio.wait_for(probe.gate.wait(), WAIT)
        probe.active -= 1
        return x

    @broker.task(task_name="t.hang")
    async def hang() -> None:
        probe.started.set()
        try:
            await asyncio.Event().wait()
        finally:
            probe.stopped.set()


def _odd_tasks(broker: InMemoryBroker) -> None:
    @broker.task(task_name="t.gpu")
    async def gpu() -> list[int]:
        return list(current_gpu_devices())

    @broker.task(task_name="t.flaky")
    async def flaky(fail_times: int) -> int:
        attempt = current_attempt()
        assert attempt is not None
        if attempt <= fail_times:
            raise ValueError(f"attempt {attempt} fails")
        return attempt

    @broker.task(task_name="t.boom")
    async def boom() -> int:
        raise RuntimeError("boom")

    @broker.task(task_name="t.sync")
    def sync_mul(a: int, b: int) -> dict[str, Any]:
        return {
            "product": a * b,
            "off_main": threading.current_thread() is not threading.main_thread(),
        }


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def broker(probe: Probe) -> InMemoryBroker:
    return make_broker(probe)


@pytest.fixture
async def fleet(broker: InMemoryBroker) -> AsyncIterator[LocalFleet]:
    async with LocalFleet(broker, [{"name": "w1", "cpu": 16, "ram_mb": 16384}]) as f:
        yield f


def node(node_id: str, task: str, **fields: Any) -> Node:
    return Node(id=node_id, task=task, **fields)


# -- values and concurrency ------------------------------------------------------------------


async def test_chain_passes_values(fleet: LocalFleet) -> None:
    dag = Dag(
        inputs=("start",),
        nodes=(
            node("a", "t.add", inputs={"a": "start"}, kwargs={"b": 1}, outputs=("one",)),
            node("b", "t.double", inputs={"x": "one"}, outputs=("two",)),
            node("c", "t.add", inputs={"a": "two", "b": "one"}, outputs=("three",)),
        ),
    )
    handle = await fleet.submit(dag, {"start": 4}, name="chain")
    outputs = await handle.result(WAIT)
    assert outputs == {"start": 4, "one": 5, "two": 10, "three": 15}
    view = await handle.status()
    assert view.status == "succeeded"
    assert view.name == "chain"
    assert {n.id: n.worker for n in view.nodes} == {"a": "w1", "b": "w1", "c": "w1"}
    assert handle.done


async def test_diamond_runs_middle_nodes_concurrently(fleet: LocalFleet, probe: Probe) -> None:
    dag = Dag(
        nodes=(
            node("top", "t.add", kwargs={"a": 1}, outputs=("t",)),
            node("left", "t.meet", inputs={"x": "t"}, outputs=("l",)),
            node("right", "t.meet", inputs={"x": "t"}, outputs=("r",)),
            node("bottom", "t.sum", inputs={"values": ("l", "r")}, outputs=("b",)),
        )
    )
    outputs = await (await fleet.submit(dag)).result(WAIT)
    assert outputs["b"] == 4
    assert probe.active == 2


async def test_diamond_is_sequential_when_the_run_allows_one(
    fleet: LocalFleet, probe: Probe
) -> None:
    """The same diamond with max_parallel=1: the meeting never happens, so it fails."""
    dag = Dag(
        nodes=(
            node("left", "t.meet", kwargs={"x": 1}, timeout=0.2),
            node("right", "t.meet", kwargs={"x": 2}, timeout=0.2),
        )
    )
    view = await (await fleet.submit(dag, max_parallel=1)).wait(WAIT)
    assert view.status == "failed"
    assert "TimeoutError" in view.error


async def test_resource_routing_across_two_workers(broker: InMemoryBroker) -> None:
    workers = [
        {"name": "cpu-box", "cpu": 8, "ram_mb": 8192},
        {"name": "gpu-box", "cpu": 8, "ram_mb": 8192, "gpus": 2},
    ]
    async with LocalFleet(broker, workers) as fleet:
        dag = Dag(
            nodes=(
                node("plain", "t.add", kwargs={"a": 1}, outputs=("p",)),
                node("embed", "t.gpu", request=ResourceRequest(gpus=1), outputs=("devices",)),
            )
        )
        handle = await fleet.submit(dag)
        outputs = await handle.result(WAIT)
        view = await handle.wait()
        embed = view.node("embed")
        assert embed.worker == "gpu-box"
        assert len(embed.gpu_devices) == 1
        assert outputs["devices"] == list(embed.gpu_devices)
        assert view.node("plain").worker == "cpu-box"  # CPU-only work avoids the GPU host


async def test_global_max_parallel_across_runs(broker: InMemoryBroker, probe: Probe) -> None:
    async with LocalFleet(broker, [{"name": "big", "cpu": 64}], max_parallel=2) as fleet:
        dag = Dag(nodes=tuple(node(f"n{i}", "t.count", kwargs={"x": i}) for i in range(3)))
        handles = [await fleet.submit(dag) for _ in range(2)]
        await asyncio.wait_for(probe.reached.wait(), WAIT)
        probe.gate.set()
        for handle in handles:
            assert (await handle.wait(WAIT)).status == "succeeded"
        assert probe.peak == 2


async def test_run_max_parallel(fleet: LocalFleet, probe: Probe) -> None:
    probe.target = 3
    dag = Dag(nodes=tuple(node(f"n{i}", "t.count", kwargs={"x": i}) for i in range(8)))
    handle = await fleet.submit(dag, options=RunOptions(max_parallel=3))
    await asyncio.wait_for(probe.reached.wait(), WAIT)
    probe.gate.set()
    assert (await handle.wait(WAIT)).status == "succeeded"
    assert probe.peak == 3


async def test_capacity_limits_concurrency(broker: InMemoryBroker, probe: Probe) -> None:
    """Two cores, one core per node: the pool, not a limit, keeps it at two."""
    async with LocalFleet(broker, [{"name": "small", "cpu": 2}]) as fleet:
        dag = Dag(nodes=tuple(node(f"n{i}", "t.count", kwargs={"x": i}) for i in range(5)))
        handle = await fleet.submit(dag)
        await asyncio.wait_for(probe.reached.wait(), WAIT)
        (worker,) = await fleet.workers()
        assert worker.spec.name == "small"
        assert worker.reserved["cpu"] == 2
        assert worker.running == 2
        probe.gate.set()
        assert (await handle.wait(WAIT)).status == "succeeded"
        assert probe.peak == 2
        assert (await fleet.workers())[0].free["cpu"] == 2


# -- failures --------------------------------------------------------------------------------


async def test_retries_until_success(fleet: LocalFleet) -> None:
    retry = RetryPolicy(max_retries=2, delay=0.01)
    dag = Dag(nodes=(node("f", "t.flaky", kwargs={"fail_times": 2}, retry=retry, outputs=("v",)),))
    handle = await fleet.submit(dag)
    assert await handle.result(WAIT) == {"v": 3}
    assert handle.nodes["f"].attempt == 3


async def test_retries_exhausted_fail_the_run(fleet: LocalFleet) -> None:
    retry = RetryPolicy(max_retries=1)
    dag = Dag(nodes=(node("f", "t.flaky", kwargs={"fail_times": 5}, retry=retry),))
    handle = await fleet.submit(dag)
    with pytest.raises(RunFailed) as caught:
        await handle.result(WAIT)
    failed = caught.value.view.node("f")
    assert failed.status == "failed"
    assert failed.attempt == 2
    assert failed.error is not None
    assert failed.error.type == "ValueError"
    assert "attempt 2 fails" in failed.error.message


async def test_on_error_continue_keeps_partial_outputs(fleet: LocalFleet) -> None:
    dag = Dag(
        nodes=(
            node("bad", "t.boom", outputs=("x",)),
            node("after-bad", "t.double", inputs={"x": "x"}, outputs=("y",)),
            node("good", "t.add", kwargs={"a": 7}, outputs=("g",)),
            node("after-good", "t.double", inputs={"x": "g"}, outputs=("h",)),
        )
    )
    view = await (await fleet.submit(dag, on_error="continue")).wait(WAIT)
    assert view.status == "failed"
    assert view.outputs == {"g": 7, "h": 14}
    assert view.node("after-bad").status == "skipped"
    assert view.node("bad").status == "failed"
    assert "bad" in view.error


async def test_on_error_stop_cancels_what_runs(fleet: LocalFleet, probe: Probe) -> None:
    dag = Dag(
        nodes=(
            node("first", "t.add", kwargs={"a": 1}, outputs=("one",)),
            node("bad", "t.boom", after=("first",)),
            node("slow", "t.hang", after=("first",)),
        )
    )
    handle = await fleet.submit(dag, on_error="stop")
    view = await handle.wait(WAIT)
    assert view.status == "failed"
    assert "node bad failed: RuntimeError: boom" in view.error
    assert view.outputs == {"one": 1}
    assert view.node("slow").status == "cancelled"
    await asyncio.wait_for(probe.stopped.wait(), WAIT)
    with pytest.raises(RunFailed):
        await handle.result()


async def test_node_timeout(fleet: LocalFleet, probe: Probe) -> None:
    dag = Dag(nodes=(node("slow", "t.hang", timeout=0.05),))
    view = await (await fleet.submit(dag)).wait(WAIT)
    slow = view.node("slow")
    assert slow.status == "failed"
    assert slow.error is not None
    assert slow.error.type == "TimeoutError"
    assert probe.stopped.is_set()


async def test_run_timeout(fleet: LocalFleet, probe: Probe) -> None:
    dag = Dag(nodes=(node("slow", "t.hang"),))
    view = await (await fleet.submit(dag, timeout=0.1)).wait(WAIT)
    assert view.status == "failed"
    assert "timed out" in view.error
    await asyncio.wait_for(probe.stopped.wait(), WAIT)


async def test_cancel_stops_the_running_attempt(fleet: LocalFleet, probe: Probe) -> None:
    dag = Dag(
        nodes=(node("slow", "t.hang"), node("next", "t.add", kwargs={"a": 1}, after=("slow",)))
    )
    handle = await fleet.submit(dag)
    await asyncio.wait_for(probe.started.wait(), WAIT)
    await handle.cancel()
    view = await handle.wait(WAIT)
    assert view.status == "cancelled"
    assert {n.id: n.status for n in view.nodes} == {"slow": "cancelled", "next": "cancelled"}
    await asyncio.wait_for(probe.stopped.wait(), WAIT)
    with pytest.raises(FleetError, match="cancelled"):
        await handle.cancel()
    with pytest.raises(FleetError, match="no run"):
        await fleet.cancel("unknown")


async def test_close_cancels_running_runs(broker: InMemoryBroker, probe: Probe) -> None:
    fleet = LocalFleet(broker, [{"name": "w", "cpu": 2}])
    handle = await fleet.submit(Dag(nodes=(node("slow", "t.hang"),)))
    await asyncio.wait_for(probe.started.wait(), WAIT)
    await fleet.close()
    assert handle.done
    assert (await handle.wait()).status == "cancelled"
    assert probe.stopped.is_set()
    with pytest.raises(RuntimeError, match="closed"):
        await fleet.submit(Dag(nodes=(node("a", "t.add", kwargs={"a": 1}),)))


async def test_unknown_task_is_infeasible_at_once(fleet: LocalFleet) -> None:
    handle = await fleet.submit(Dag(nodes=(node("x", "t.missing"),)))
    view = await handle.wait(WAIT)
    assert view.status == "failed"
    assert view.finished_at == view.submitted_at  # decided in the submission's own event
    assert "no live worker has task 't.missing'" in view.error
    error = view.node("x").error
    assert error is not None
    assert error.type == "Infeasible"


async def test_too_large_request_is_infeasible_at_once(fleet: LocalFleet) -> None:
    dag = Dag(nodes=(node("g", "t.gpu", request=ResourceRequest(gpus=1)),))
    view = await (await fleet.submit(dag)).wait(WAIT)
    assert view.status == "failed"
    assert view.finished_at == view.submitted_at
    assert view.node("g").attempt == 0
    assert view.error.startswith("infeasible")
    assert "gpu" in view.error


async def test_missing_input_is_refused_at_submit(fleet: LocalFleet) -> None:
    dag = Dag(inputs=("x",), nodes=(node("a", "t.double", inputs={"x": "x"}),))
    with pytest.raises(ValueError, match="missing external input"):
        await fleet.submit(dag)


# -- task kinds ------------------------------------------------------------------------------


async def test_sync_task_runs_in_a_thread(fleet: LocalFleet) -> None:
    dag = Dag(nodes=(node("m", "t.sync", kwargs={"a": 6, "b": 7}, outputs=("m",)),))
    outputs = await (await fleet.submit(dag)).result(WAIT)
    assert outputs["m"] == {"product": 42, "off_main": True}


async def test_taskiq_depends(fleet: LocalFleet) -> None:
    dag = Dag(nodes=(node("s", "t.depends", kwargs={"x": 4}, outputs=("s",)),))
    assert await (await fleet.submit(dag)).result(WAIT) == {"s": 40}


async def test_large_values_stay_in_memory(fleet: LocalFleet) -> None:
    big = "x" * (3 * 1024 * 1024)
    dag = Dag(
        inputs=("big",),
        nodes=(node("e", "t.echo", inputs={"value": "big"}, outputs=("out",)),),
    )
    outputs = await (await fleet.submit(dag, {"big": big})).result(WAIT)
    assert outputs["out"] == big


async def test_tasks_defined_after_the_fleet_are_known(
    fleet: LocalFleet, broker: InMemoryBroker
) -> None:
    @broker.task(task_name="t.late")
    async def late() -> str:
        return "late"

    assert await (await fleet.submit(Dag(nodes=(node("l", "t.late", outputs=("l",)),)))).result(
        WAIT
    ) == {"l": "late"}


# -- following a run -------------------------------------------------------------------------


async def test_on_update_receives_node_changes(fleet: LocalFleet) -> None:
    dag = Dag(
        nodes=(
            node("a", "t.add", kwargs={"a": 1}, outputs=("one",)),
            node("b", "t.double", inputs={"x": "one"}, outputs=("two",)),
        )
    )
    updates: list[RunUpdate] = []
    handle = await fleet.submit(dag)
    handle.on_update(updates.append)
    await handle.wait(WAIT)
    seen: dict[str, list[str]] = {}
    for update in updates:
        for n in update.nodes:
            seen.setdefault(n.id, []).append(n.status)
    assert seen["a"][0] in ("ready", "placed", "running")  # from the first change on
    assert seen["a"][-1] == "succeeded"
    assert "running" in seen["a"]
    assert "running" in seen["b"]
    assert seen["b"][-1] == "succeeded"
    assert updates[-1].run is not None
    assert updates[-1].run.status == "succeeded"
    assert all(u.run is None for u in updates[:-1])
    assert handle.nodes["b"].status == "succeeded"


async def test_progress_off_sends_only_the_end(fleet: LocalFleet) -> None:
    dag = Dag(nodes=(node("a", "t.add", kwargs={"a": 1}),))
    updates: list[RunUpdate] = []
    handle = await fleet.submit(dag, progress=False)
    handle.on_update(updates.append)
    await handle.wait(WAIT)
    assert len(updates) == 1
    assert updates[0].run is not None


async def test_status_of_live_and_finished_runs(fleet: LocalFleet, probe: Probe) -> None:
    handle = await fleet.submit(Dag(nodes=(node("slow", "t.hang"),)), run_id="r1")
    await asyncio.wait_for(probe.started.wait(), WAIT)
    live = await fleet.status("r1")
    assert live is not None
    assert live.status == "running"
    assert live.node("slow").status == "running"
    await handle.cancel()
    assert (await fleet.status("r1")) == await handle.wait()
    assert await fleet.status("nope", missing_ok=True) is None
    again = await fleet.submit(Dag(nodes=(node("slow", "t.hang"),)), run_id="r1")
    assert again.done  # a finished run id is not run a second time
    assert (await again.wait()).status == "cancelled"


async def test_default_worker_is_this_host(broker: InMemoryBroker) -> None:
    async with LocalFleet(broker) as fleet:
        (worker,) = await fleet.workers()
        assert worker.spec.name == "local"
        assert worker.spec.cpu > 0
        assert worker.spec.ram_mb > 0


def test_bad_worker_lists_are_refused(broker: InMemoryBroker) -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        LocalFleet(broker, [])
    with pytest.raises(ValueError, match="used twice"):
        LocalFleet(broker, [{"name": "a", "cpu": 1}, {"name": "a", "cpu": 1}])
    with pytest.raises(ValueError, match="NATS subject"):
        LocalFleet(broker, [{"name": "a b", "cpu": 1}])
    fleet = LocalFleet(broker, [{"cpu": 1}, {"cpu": 2}])  # no event loop needed to build one
    assert list(fleet._workers) == ["worker-0", "worker-1"]
