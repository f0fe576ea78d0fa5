"""Document 000, the Optimization API: its examples, run with only their imports changed.

Imports: ``taskiq_flow`` and ``taskiq_flow.optimization`` -> ``taskiq_fleet``. The broker
is taskiq's ``InMemoryBroker``, so pipelines run in process on a ``LocalFleet``. The host
that the executor reads through psutil is replaced by a fixed one (8 idle cores, 16 GiB
free), so the documents' numbers can be checked exactly. Scaffolding shared with the other
documents' tests (the ``broker`` fixture, ``run_on``) is in ``tests/unit/documents_support.py``.

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

import psutil  # type: ignore[import-untyped, unused-ignore]
import pytest
from taskiq import InMemoryBroker

from taskiq_fleet import ResourceRequest, request_of
from taskiq_fleet.flow.annotations import flow_of
from tests.unit.documents_support import broker as broker  # a fixture
from tests.unit.documents_support import no_global_cap as no_global_cap  # a fixture
from tests.unit.documents_support import run_on

pytestmark = pytest.mark.usefixtures("no_global_cap")

VirtualMemory = namedtuple("VirtualMemory", "total available percent")
GIB = 1024**3


@pytest.fixture(autouse=True)
def fixed_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """psutil reports 8 idle logical CPUs and 16 GiB of memory, all of it available."""
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 8)
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None: 0.0)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: VirtualMemory(16 * GIB, 16 * GIB, 0.0))


# -- ResourceAwareExecutor -----------------------------------------------------------------


def test_executor_constructor() -> None:
    from taskiq_fleet import ResourceAwareExecutor

    executor = ResourceAwareExecutor(
        max_cpu_percent=80.0,  # Max CPU usage allowed (percentage)
        max_memory_percent=80.0,  # Max memory usage allowed (percentage)
        min_parallel=1,  # Minimum parallelism floor
        max_parallel=100,  # Maximum parallelism ceiling
    )

    assert (executor.max_cpu_percent, executor.max_memory_percent) == (80.0, 80.0)
    assert (executor.min_parallel, executor.max_parallel) == (1, 100)


def test_get_optimal_parallelism(capsys: pytest.CaptureFixture[str]) -> None:
    from taskiq_fleet import ResourceAwareExecutor

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
    from taskiq_fleet import TaskResourceProfile

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
    from taskiq_fleet import TaskResourceProfile, pipeline_task

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
    results, ran_on = await run_on(broker, workers, heavy_computation, data={"x": 1})
    assert results == {"result": {"x": 1}}
    assert ran_on == ["big"]


# -- get_default_executor ------------------------------------------------------------------


def test_get_default_executor() -> None:
    from taskiq_fleet import ResourceAwareExecutor, get_default_executor

    executor = get_default_executor()
    # Returns a singleton ResourceAwareExecutor with default settings

    assert isinstance(executor, ResourceAwareExecutor)
    assert get_default_executor() is executor
    assert (executor.max_cpu_percent, executor.max_memory_percent) == (80.0, 80.0)
    assert (executor.min_parallel, executor.max_parallel) == (1, 100)


# -- Integration with DataflowPipeline -----------------------------------------------------


async def test_integration_with_dataflow_pipeline(broker: InMemoryBroker) -> None:
    from taskiq_fleet import DataflowPipeline, ResourceAwareExecutor

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
