"""Document 000, the Optimization API: its examples, run with only their imports changed.

Imports: ``taskiq_flow.optimization`` -> ``coordinator.optimization``; ``taskiq_flow``
``pipeline_task`` -> ``shared.flow``, ``DataflowPipeline`` -> ``coordinator.flow``. The broker
is taskiq's ``InMemoryBroker``, so pipelines run in process on a ``LocalFleet``. The host
that the executor reads through psutil is replaced by a fixed one (8 idle cores, 16 GiB
free), so the documents' numbers can be checked exactly.

Inventory (behaviour: a test runs it; prose: nothing to run):

| section | example | kind | test |
| --- | --- | --- | --- |
| ResourceAwareExecutor | the constructor, four settings | behaviour | test_executor_constructor |
| Methods | ``get_optimal_parallelism`` signature | prose | - |
| Methods, Example | ``get_optimal_parallelism(100, 0.5)`` | behaviour | test_get_optimal_... |
| TaskResourceProfile | the constructor | behaviour | test_task_resource_profile |
| TaskResourceProfile | ``@pipeline_task(resources=...)`` | behaviour | test_profile_with_... |
| Fields | table | prose | - |
| get_default_executor | the singleton | behaviour | test_get_default_executor |
| Integration | executor -> ``DataflowPipeline`` | behaviour | test_integration_with_... |
| Best Practices | list | prose | - |

6 behaviour examples, 6 tests, none xfail.
"""

from collections import namedtuple
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]
import pytest
from taskiq import AsyncBroker, InMemoryBroker

from coordinator.flow.runner import runner_for, use_local_fleet
from coordinator.inprocess import LocalFleet
from coordinator.optimization import set_max_parallel_tasks
from shared import ResourceRequest, request_of
from shared.flow import flow_of

VirtualMemory = namedtuple("VirtualMemory", "total available percent")
GIB = 1024**3


@pytest.fixture(autouse=True)
def fixed_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """psutil reports 8 idle logical CPUs and 16 GiB of memory, all of it available."""
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 8)
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None: 0.0)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: VirtualMemory(16 * GIB, 16 * GIB, 0.0))
    set_max_parallel_tasks(None)
    yield
    set_max_parallel_tasks(None)


@pytest.fixture
async def broker() -> AsyncIterator[InMemoryBroker]:
    broker = InMemoryBroker()
    yield broker
    await runner_for(broker).close()  # type: ignore[attr-defined]


@asynccontextmanager
async def fleet_of(broker: AsyncBroker, workers: list[dict[str, Any]]) -> AsyncIterator[LocalFleet]:
    """Run ``broker``'s pipelines on in-process workers of the given sizes."""
    async with LocalFleet(broker, workers) as fleet:
        use_local_fleet(broker, fleet)
        yield fleet


# -- ResourceAwareExecutor -----------------------------------------------------------------


def test_executor_constructor() -> None:
    from coordinator.optimization import ResourceAwareExecutor

    executor = ResourceAwareExecutor(
        max_cpu_percent=80.0,  # Max CPU usage allowed (percentage)
        max_memory_percent=80.0,  # Max memory usage allowed (percentage)
        min_parallel=1,  # Minimum parallelism floor
        max_parallel=100,  # Maximum parallelism ceiling
    )

    assert (executor.max_cpu_percent, executor.max_memory_percent) == (80.0, 80.0)
    assert (executor.min_parallel, executor.max_parallel) == (1, 100)


def test_get_optimal_parallelism(capsys: pytest.CaptureFixture[str]) -> None:
    from coordinator.optimization import ResourceAwareExecutor

    executor = ResourceAwareExecutor(
        max_cpu_percent=80.0,  # Max CPU usage allowed (percentage)
        max_memory_percent=80.0,  # Max memory usage allowed (percentage)
        min_parallel=1,  # Minimum parallelism floor
        max_parallel=100,  # Maximum parallelism ceiling
    )
    optimal = executor.get_optimal_parallelism(
        task_memory_estimate=100,  # 100 MB per task
        task_cpu_estimate=0.5,  # 0.5 cores per task
    )
    print(f"Run up to {optimal} tasks in parallel")

    # CPU: 8 cores * 80% = 6.4 cores -> 12 tasks of half a core; memory: 16384 MB - 20%
    # kept back = 13107 MB -> 131 tasks of 100 MB. The smaller limit wins.
    assert optimal == 12
    assert capsys.readouterr().out == "Run up to 12 tasks in parallel\n"


# -- TaskResourceProfile -------------------------------------------------------------------


def test_task_resource_profile() -> None:
    from coordinator.optimization import TaskResourceProfile

    profile = TaskResourceProfile(
        estimated_memory_mb=256,  # Memory needed per task
        estimated_cpu_cores=1.0,  # CPU cores needed
        io_bound=False,  # True = I/O wait, False = CPU intensive
    )

    assert profile.estimated_memory_mb == 256
    assert profile.estimated_cpu_cores == 1.0
    assert profile.io_bound is False
    assert profile.to_request() == ResourceRequest(cpu=1.0, ram_mb=256)


async def test_profile_with_pipeline_task(broker: InMemoryBroker) -> None:
    from coordinator.flow import DataflowPipeline
    from coordinator.optimization import TaskResourceProfile
    from shared.flow import pipeline_task

    @broker.task
    @pipeline_task(
        output="result",
        resources=TaskResourceProfile(
            estimated_memory_mb=512,
            estimated_cpu_cores=2.0,
            io_bound=False,
        ),
    )
    async def heavy_computation(data: dict) -> dict:
        return data  # stand-in for the document's `...`

    spec = flow_of(heavy_computation)
    assert spec is not None
    assert spec.outputs == ("result",)
    assert request_of(heavy_computation) == ResourceRequest(cpu=2.0, ram_mb=512)
    # Annotated resources decide where it runs: not on a 1-core worker, on the 4-core one.
    workers = [
        {"name": "small", "cpu": 1, "ram_mb": 4096},
        {"name": "big", "cpu": 4, "ram_mb": 4096},
    ]
    async with fleet_of(broker, workers) as fleet:
        pipeline = DataflowPipeline.from_tasks(broker, [heavy_computation])
        assert await pipeline.kiq_dataflow(data={"x": 1}) == {"result": {"x": 1}}
        assert pipeline.pipeline_id is not None
        view = await fleet.status(pipeline.pipeline_id)
        assert view is not None
        assert [node.worker for node in view.nodes] == ["big"]


# -- get_default_executor ------------------------------------------------------------------


def test_get_default_executor() -> None:
    from coordinator.optimization import ResourceAwareExecutor, get_default_executor

    executor = get_default_executor()
    # Returns a singleton ResourceAwareExecutor with default settings

    assert isinstance(executor, ResourceAwareExecutor)
    assert get_default_executor() is executor
    assert (executor.max_cpu_percent, executor.max_memory_percent) == (80.0, 80.0)
    assert (executor.min_parallel, executor.max_parallel) == (1, 100)


# -- Integration with DataflowPipeline -----------------------------------------------------


async def test_integration_with_dataflow_pipeline(broker: InMemoryBroker) -> None:
    from coordinator.flow import DataflowPipeline
    from coordinator.optimization import ResourceAwareExecutor

    # stand-ins for the document's undefined `light_task` and `items`
    @broker.task
    def light_task(item: int) -> int:
        return item + 1

    items = list(range(40))

    executor = ResourceAwareExecutor()
    optimal_parallel = executor.get_optimal_parallelism(
        task_memory_estimate=50,
        task_cpu_estimate=0.2,
    )
    pipeline = DataflowPipeline(broker, max_parallel=optimal_parallel)
    pipeline.map(light_task, items, output="results")
    results = await pipeline.kiq_dataflow()

    assert optimal_parallel == 32  # 6.4 cores / 0.2; memory allows 262
    assert pipeline.max_parallel == 32
    assert results == {"results": [item + 1 for item in items]}
