"""Scaffolding shared by the tests of the documents' examples (``test_documents_*.py``).

None of this is the documents' code: it is what runs their examples (a broker, an
in-process fleet, a global cap reset between tests), the stand-ins several documents leave
undefined in the same way, and the gauge that checks how many stand-in calls ran at once.

A test module brings a fixture in by importing it under its own name, the explicit
re-export form, which tells linters the import is meant although no line reads it::

    from tests.unit.documents_support import broker as broker
    from tests.unit.documents_support import no_global_cap as no_global_cap

    pytestmark = pytest.mark.usefixtures("no_global_cap")
"""

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from taskiq import AsyncBroker, InMemoryBroker

from taskiq_fleet import HostSnapshot, ResourceAwareExecutor, set_max_parallel_tasks
from taskiq_fleet.flow.runner import runner_for, use_local_fleet
from taskiq_fleet.inprocess import LocalFleet

BIG_WORKER = [{"name": "big", "cpu": 512, "ram_mb": 1_000_000}]
"""One worker with room for hundreds of default (1-core) tasks at once, so that only the
documents' ``max_parallel`` limits how many run together."""

HOST_WITH_ROOM = HostSnapshot(64, 0.0, total_memory_mb=1e6, available_memory_mb=1e6)
"""What an executor reads instead of psutil: 64 idle cores and about 1 TB free."""


def roomy_parallelism() -> int:
    """The optimal parallelism of tiny tasks, by an executor that allows 1000 of them on
    ``HOST_WITH_ROOM``: far more than the documents' global limits (20, 100), so that a
    global ``set_max_parallel_tasks`` limit is what it returns."""
    executor = ResourceAwareExecutor(max_parallel=1000, probe=lambda: HOST_WITH_ROOM)
    return executor.get_optimal_parallelism(task_memory_estimate=1, task_cpu_estimate=0.01)


@pytest.fixture
def no_global_cap() -> Iterator[None]:
    """No global ``set_max_parallel_tasks`` limit before the test, nor left after it."""
    set_max_parallel_tasks(None)
    yield
    set_max_parallel_tasks(None)


@pytest.fixture
async def broker() -> AsyncIterator[InMemoryBroker]:
    """taskiq's ``InMemoryBroker``; the in-process fleet its pipelines ran on is closed after."""
    broker = InMemoryBroker()
    yield broker
    await runner_for(broker).close()


@asynccontextmanager
async def fleet_of(broker: AsyncBroker, workers: list[dict[str, Any]]) -> AsyncIterator[LocalFleet]:
    """Run ``broker``'s pipelines on in-process workers of the given sizes."""
    async with LocalFleet(broker, workers) as fleet:
        use_local_fleet(broker, fleet)
        yield fleet


async def worker_of(fleet: LocalFleet, pipeline: Any) -> list[str | None]:
    """Where each node of the pipeline's last run ran."""
    assert pipeline.pipeline_id is not None
    view = await fleet.status(pipeline.pipeline_id)
    assert view is not None
    return [node.worker for node in view.nodes]


async def run_on(
    broker: AsyncBroker, workers: list[dict[str, Any]], task: Any, **inputs: Any
) -> tuple[dict[str, Any], list[str | None]]:
    """Run ``task`` as a dataflow of its own on in-process workers of the given sizes: what
    it gave, and where each node ran."""
    from taskiq_fleet import DataflowPipeline

    async with fleet_of(broker, workers) as fleet:
        pipeline = DataflowPipeline.from_tasks(broker, [task])
        results = await pipeline.kiq_dataflow(**inputs)
        return results, await worker_of(fleet, pipeline)


class Gauge:
    """How many calls of a stand-in task run at the same time (test scaffolding)."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.calls = 0

    async def hold(self) -> None:
        self.running += 1
        self.calls += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(0)  # a yield point, not a wait: every started call gets here
        self.running -= 1

    def task(self, broker: AsyncBroker) -> Callable[[Callable[..., Any]], Any]:
        """``@gauge.task(broker)`` over a stand-in's body: an async task of ``broker``, under
        the body's own name and signature, that this gauge counts while it runs."""

        def decorate(body: Callable[..., Any]) -> Any:
            @functools.wraps(body)
            async def gauged(*args: Any, **kwargs: Any) -> Any:
                await self.hold()
                return body(*args, **kwargs)

            return broker.task(gauged)

        return decorate


def doubling_pipeline(broker: AsyncBroker) -> Any:
    """Stand-in ``pipeline``: one step that doubles its input."""
    from taskiq_fleet import Pipeline

    @broker.task
    def double(x: int) -> int:
        return 2 * x

    return Pipeline(broker).call_next(double)


def recording(pipeline: Any) -> list[Any]:
    """Keep what ``pipeline.kiq`` returns when an example drops it, to wait for it after."""
    started: list[Any] = []
    kiq = pipeline.kiq

    async def recording_kiq(*args: Any, **kwargs: Any) -> Any:
        task = await kiq(*args, **kwargs)
        started.append(task)
        return task

    pipeline.kiq = recording_kiq
    return started
