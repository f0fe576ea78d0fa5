"""Document 002, the Tasks guide: its examples, run with only their imports changed.

Imports: ``taskiq_flow`` -> ``taskiq_fleet``; ``taskiq.exceptions.RetryException`` (taskiq
has none) -> ``taskiq_fleet``.
The broker is taskiq's ``InMemoryBroker``: pipelines run in process on a ``LocalFleet``.
Names the document leaves undefined get the smallest stand-in next to the example, marked as
such; each example is run through a pipeline (the test's own lines) to see what it does.
Scaffolding shared with the other documents' tests (the ``broker`` fixture, ``run_on``) is
in ``tests/unit/documents_support.py``.

Inventory (behaviour: a test runs it; prose: nothing to run). Each test is named
``test_<section>_...``, except the document's own pytest example, kept as written.

| section | example | kind |
| --- | --- | --- |
| 1 | minimal ``InMemoryBroker`` task | behaviour |
| 2.1 | ``@broker.task def add(a, b)`` | behaviour |
| 2.1 | ``@broker.task(timeout=30, retry_policy=None, max_retries=3, ...)`` | behaviour |
| 2.2 | ``@pipeline_task(output=...)``: extract -> tag | behaviour |
| 2.2 | parameter table | prose |
| 2.2 | ``@pipeline_task(outputs=["features", "metadata"])`` | behaviour |
| 2.3 | ``@pipeline_task_multi_output(outputs=["x", "y"])`` | behaviour |
| 3.1 | ``@broker.task(name=..., labels={...})``: runs | behaviour |
| 3.1 | ``@broker.task(name=..., labels={...})``: name and labels | behaviour, xfail |
| 3.1 | the same on ``LocalFleetBroker``: name and labels | behaviour |
| 3.2 | ``TaskInfo`` and ``@pipeline_task(description=...)`` | behaviour |
| 4.1 | ``@CPUProfile(cpu_units=2)`` | behaviour |
| 4.1 | ``cpu_units`` table | prose |
| 4.2 | ``@RAMProfile(ram_mb=2048)`` | behaviour |
| 4.2 | ``ResourceAwareWorkerPool(workers=[...])`` | behaviour |
| 4.3 | ``@CPUProfile(cpu_units=4) @RAMProfile(ram_mb=4096)`` | behaviour |
| 5.1 | type hints, default and keyword-only parameters | behaviour |
| 5.2 | Pydantic model as result | behaviour |
| 5.3 | tuple result; ``@pipeline_task(outputs=["head", "tail"])`` | behaviour |
| 6.1 | ``@broker.task(retry_policy={...})`` | behaviour |
| 6.2 | ``Pipeline(broker).with_retry(...)`` | behaviour |
| 6.3 | ``RetryException`` for some errors only | behaviour |
| 7.1 | automatic discovery | prose |
| 7.2 | ``register_task`` / ``register_task_from_object`` | behaviour |
| 8 | pure task and its unit test | behaviour |
| 8 | ``test_broker`` fixture, ``test_task_execution`` | behaviour (as written) |
| 9.1 | idempotency through a cache | behaviour |
| 9.2 | one task in two pipelines | behaviour |
| 9.3 | progress callback | behaviour |
| 10, 11 | anti-pattern table, summary | prose |

24 behaviour examples (3.1 has three tests), 26 tests, 1 of them xfail.
"""

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from taskiq import AsyncBroker, InMemoryBroker

from taskiq_fleet import (
    CannotPlace,
    DataflowPipeline,
    Pipeline,
    PipelineError,
    ResourceRequest,
    RetryPolicy,
    request_of,
)
from taskiq_fleet.flow.annotations import flow_of
from taskiq_fleet.flow.runner import runner_for
from tests.unit.documents_support import broker as broker  # a fixture
from tests.unit.documents_support import run_on

# -- 1. What is a task ---------------------------------------------------------------------


async def test_1_minimal_task() -> None:
    from taskiq import InMemoryBroker

    broker = InMemoryBroker()

    @broker.task
    async def my_task(value: int) -> int:
        return value * 2

    task = await Pipeline(broker).call_next(my_task).kiq(21)
    assert (await task.wait_result(timeout=30)).return_value == 42
    await runner_for(broker).close()  # type: ignore[attr-defined]


# -- 2. Task decorators --------------------------------------------------------------------


async def test_2_1_basic_task(broker: InMemoryBroker) -> None:
    @broker.task
    def add(a: int, b: int) -> int:
        return a + b

    task = await Pipeline(broker).call_next(add).kiq(2, 3)
    assert (await task.wait_result(timeout=30)).return_value == 5
    assert await DataflowPipeline.from_tasks(broker, [add]).kiq_dataflow(a=2, b=3) == {"add": 5}


@pytest.fixture
def fast_ten_second_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's task sleeps 10 s; that one sleep returns at once (test speed only)."""
    real_sleep = asyncio.sleep

    async def sleep(delay: float, result: Any = None) -> Any:
        return await real_sleep(0 if delay == 10 else delay, result)

    monkeypatch.setattr(asyncio, "sleep", sleep)


async def test_2_1_options(broker: InMemoryBroker, fast_ten_second_sleep: None) -> None:
    @broker.task(
        timeout=30,  # Seconds before task times out
        retry_policy=None,  # Custom RetryPolicy (see Retry Guide)
        max_retries=3,  # Override global default
        queue="default",  # Route to specific queue
        labels={"type": "cpu"},  # Custom metadata labels
    )
    async def slow_task():  # type: ignore[no-untyped-def]
        await asyncio.sleep(10)
        return "done"

    assert slow_task.labels["timeout"] == 30
    assert slow_task.labels["max_retries"] == 3
    assert slow_task.labels["queue"] == "default"
    (node,) = DataflowPipeline.from_tasks(broker, [slow_task]).build().nodes
    assert node.timeout == 30  # a pipeline node keeps the task's own timeout and retries
    assert node.retry.max_retries == 3
    task = await Pipeline(broker).call_next(slow_task).kiq()
    assert (await task.wait_result(timeout=30)).return_value == "done"


async def test_2_2_pipeline_task(broker: InMemoryBroker) -> None:
    from taskiq_fleet import pipeline_task

    def compute_features(data: list[str]) -> dict[str, int]:  # stand-in
        return {d: len(d) for d in data}

    def generate_tags(features: dict[str, Any]) -> list[str]:  # stand-in
        return sorted(features)

    @broker.task
    @pipeline_task(output="features")
    def extract(data: list[str]) -> dict:
        return {"features": compute_features(data)}

    # Downstream task automatically receives 'features' parameter:
    @broker.task
    @pipeline_task(output="tags")
    def tag(features: dict) -> list[str]:
        # 'features' is automatically passed from extract_task
        return generate_tags(features)

    pipeline = DataflowPipeline.from_tasks(broker, [extract, tag])
    assert await pipeline.kiq_dataflow(data=["a", "bb"]) == {
        "features": {"features": {"a": 1, "bb": 2}},
        "tags": ["features"],
    }


async def test_2_2_multiple_outputs(broker: InMemoryBroker) -> None:
    from taskiq_fleet import pipeline_task

    def extract_features(data: str) -> dict[str, int]:  # stand-in
        return {"length": len(data)}

    def extract_metadata(data: str) -> dict[str, str]:  # stand-in
        return {"first": data[:1]}

    @broker.task
    @pipeline_task(outputs=["features", "metadata"])
    def split_output(data: str) -> tuple[dict, dict]:
        features = extract_features(data)
        metadata = extract_metadata(data)
        return features, metadata  # tuple unpacked to both outputs

    pipeline = DataflowPipeline.from_tasks(broker, [split_output])
    assert await pipeline.kiq_dataflow(data="abc") == {
        "features": {"length": 3},
        "metadata": {"first": "a"},
    }


async def test_2_3_multi_output(broker: InMemoryBroker) -> None:
    from taskiq_fleet import pipeline_task_multi_output

    @broker.task
    @pipeline_task_multi_output(outputs=["x", "y"])
    def split(value: int) -> tuple[int, int]:
        return value // 2, value % 2

    assert await DataflowPipeline.from_tasks(broker, [split]).kiq_dataflow(value=7) == {
        "x": 3,
        "y": 1,
    }


# -- 3. Task metadata ----------------------------------------------------------------------


async def test_3_1_standard_attributes(broker: InMemoryBroker) -> None:
    @broker.task(
        name="process_audio_track",  # Override auto-generated name
        labels={"category": "audio_processing", "priority": "high"},
    )
    async def process_track(track_id: str) -> dict:
        return {"track": track_id, "status": "processed"}

    task = await Pipeline(broker).call_next(process_track).kiq("t1")
    assert (await task.wait_result(timeout=30)).return_value == {
        "track": "t1",
        "status": "processed",
    }


def assert_named_and_labelled(broker: AsyncBroker, process_track: Any) -> None:
    """What 3.1's ``name=`` and ``labels=`` say the decorated task gets."""
    assert process_track.task_name == "process_audio_track"
    assert broker.find_task("process_audio_track") is not None
    assert process_track.labels["category"] == "audio_processing"
    assert process_track.labels["priority"] == "high"


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="taskiq's broker.task(task_name=None, **labels) takes name= and labels= as two labels "
    "called 'name' and 'labels': the task keeps its generated name "
    "('tests.unit.test_documents_tasks_guide:process_track') and has no 'category' label",
)
def test_3_1_name_and_labels() -> None:
    broker = InMemoryBroker()

    @broker.task(
        name="process_audio_track",  # Override auto-generated name
        labels={"category": "audio_processing", "priority": "high"},
    )
    async def process_track(track_id: str) -> dict:
        return {"track": track_id, "status": "processed"}

    assert_named_and_labelled(broker, process_track)


def test_3_1_name_and_labels_on_the_fleet_broker() -> None:
    """The same example with ``InMemoryBroker`` -> ``LocalFleetBroker``: ours reads the
    documents' ``name=`` and ``labels=`` as they mean them."""
    from taskiq_fleet import LocalFleetBroker

    broker = LocalFleetBroker()

    @broker.task(
        name="process_audio_track",  # Override auto-generated name
        labels={"category": "audio_processing", "priority": "high"},
    )
    async def process_track(track_id: str) -> dict:
        return {"track": track_id, "status": "processed"}

    assert_named_and_labelled(broker, process_track)
    with pytest.raises(TypeError, match="labels= takes a mapping"):
        broker.task(labels="audio")


async def test_3_2_task_info(broker: InMemoryBroker) -> None:
    from taskiq_fleet import TaskInfo, pipeline_task

    np = SimpleNamespace(ndarray=list)  # stand-in for `import numpy as np` (not installed)

    task_info = TaskInfo(
        name="extract_spectrogram",
        description="Extract mel-spectrogram from audio waveform",
        parameters={
            "sample_rate": {"type": "int", "default": 22050},
            "n_mels": {"type": "int", "default": 128},
        },
        outputs=["spectrogram", "sample_rate"],
    )

    @broker.task
    @pipeline_task(output="spectrogram", description=task_info.description)
    def extract_spectrogram(audio: np.ndarray, sample_rate: int = 22050, n_mels: int = 128):  # type: ignore[no-untyped-def, name-defined]
        # implementation...
        spectrogram = [[abs(x) * n_mels / sample_rate] for x in audio]  # stand-in
        return spectrogram

    assert task_info.name == "extract_spectrogram"
    assert task_info.parameters["n_mels"] == {"type": "int", "default": 128}
    assert task_info.outputs == ["spectrogram", "sample_rate"]
    spec = flow_of(extract_spectrogram)
    assert spec is not None
    assert spec.description == "Extract mel-spectrogram from audio waveform"
    results = await DataflowPipeline.from_tasks(broker, [extract_spectrogram]).kiq_dataflow(
        audio=[-22050, 0]
    )
    assert results == {"spectrogram": [[128.0], [0.0]]}


# -- 4. Resource profiles ------------------------------------------------------------------


async def test_4_1_cpu_profile(broker: InMemoryBroker) -> None:
    from taskiq_fleet import CPUProfile

    @broker.task
    @CPUProfile(cpu_units=2)  # Requires 2 CPU cores
    def heavy_computation(data):  # type: ignore[no-untyped-def]
        # This task will be scheduled on workers with at least 2 cores
        pass

    assert request_of(heavy_computation) == ResourceRequest(cpu=2)
    workers = [{"name": "one-core", "cpu": 1}, {"name": "two-cores", "cpu": 2}]
    results, ran_on = await run_on(broker, workers, heavy_computation, data=1)
    assert results == {"heavy_computation": None}
    assert ran_on == ["two-cores"]


async def test_4_2_ram_profile(broker: InMemoryBroker) -> None:
    from taskiq_fleet import RAMProfile

    @broker.task
    @RAMProfile(ram_mb=2048)  # Requires 2GB RAM
    def memory_intensive(data):  # type: ignore[no-untyped-def]
        # Will only run on workers with at least 2GB available RAM
        pass

    assert request_of(memory_intensive) == ResourceRequest(ram_mb=2048)
    workers = [{"name": "1gb", "cpu": 8, "ram_mb": 1024}, {"name": "2gb", "cpu": 1, "ram_mb": 2048}]
    results, ran_on = await run_on(broker, workers, memory_intensive, data=1)
    assert results == {"memory_intensive": None}
    assert ran_on == ["2gb"]


def test_4_2_resource_aware_worker_pool() -> None:
    from taskiq_fleet import CPUProfile, RAMProfile, ResourceAwareWorkerPool

    broker = InMemoryBroker()

    @broker.task
    @CPUProfile(cpu_units=2)  # the task of 4.1
    def heavy_computation(data):  # type: ignore[no-untyped-def]
        pass

    @broker.task
    @RAMProfile(ram_mb=2048)  # the task of 4.2
    def memory_intensive(data):  # type: ignore[no-untyped-def]
        pass

    pool = ResourceAwareWorkerPool(
        workers=[
            {"cpu_cores": 4, "ram_gb": 8},
            {"cpu_cores": 2, "ram_gb": 4},
        ]
    )
    # Tasks are routed to workers with sufficient resources

    assert pool.workers == ["worker-0", "worker-1"]
    heavy = [pool.place(request_of(heavy_computation)) for _ in range(3)]
    assert sorted(p.worker for p in heavy if not isinstance(p, CannotPlace)) == [
        "worker-0",
        "worker-0",
        "worker-1",
    ]
    busy = pool.place(request_of(memory_intensive))  # every core is taken now
    assert isinstance(busy, CannotPlace)
    assert busy.kind == "busy"
    for placement in heavy:
        assert not isinstance(placement, CannotPlace)
        pool.release(placement.key)
    fits = [pool.place(request_of(memory_intensive)) for _ in range(6)]  # 8 GB / 2 + 4 GB / 2
    assert sorted(p.worker for p in fits if not isinstance(p, CannotPlace)) == [
        *["worker-0"] * 4,
        *["worker-1"] * 2,
    ]


async def test_4_3_combined_profiles(broker: InMemoryBroker) -> None:
    from taskiq_fleet import CPUProfile, RAMProfile

    @broker.task
    @CPUProfile(cpu_units=4)
    @RAMProfile(ram_mb=4096)
    def gpu_style_task(data):  # type: ignore[no-untyped-def]
        # High-resource task
        pass

    assert request_of(gpu_style_task) == ResourceRequest(cpu=4, ram_mb=4096)
    workers = [
        {"name": "low-ram", "cpu": 4, "ram_mb": 2048},
        {"name": "few-cores", "cpu": 2, "ram_mb": 8192},
        {"name": "enough", "cpu": 4, "ram_mb": 4096},
    ]
    results, ran_on = await run_on(broker, workers, gpu_style_task, data=1)
    assert results == {"gpu_style_task": None}
    assert ran_on == ["enough"]


# -- 5. Input/output specification ---------------------------------------------------------


async def test_5_1_type_hints(broker: InMemoryBroker) -> None:
    @broker.task
    async def process(
        text: str,  # Required input
        max_length: int = 100,  # Optional with default
        *,
        strict: bool = False,  # Keyword-only argument
    ) -> dict:
        return {"processed": text[:max_length]}

    pipeline = DataflowPipeline.from_tasks(broker, [process])
    assert await pipeline.kiq_dataflow(text="x" * 150) == {"process": {"processed": "x" * 100}}
    with pytest.raises(ValueError, match="missing external input"):
        await pipeline.kiq_dataflow(max_length=3)  # text is required, the others are not
    shorter = DataflowPipeline(broker).add_dataflow_task(
        process, kwargs={"max_length": 3, "strict": True}
    )
    assert await shorter.kiq_dataflow(text="abcdef") == {"process": {"processed": "abc"}}


async def test_5_2_pydantic_models(broker: InMemoryBroker) -> None:
    from pydantic import BaseModel

    class AudioFeatures(BaseModel):
        duration: float
        tempo: float
        key: str

    @broker.task
    async def extract_features(audio_path: str) -> AudioFeatures:
        # Pydantic validates and serializes automatically
        return AudioFeatures(duration=180.0, tempo=120.0, key="C")

    results = await DataflowPipeline.from_tasks(broker, [extract_features]).kiq_dataflow(
        audio_path="a.mp3"
    )
    assert results == {"extract_features": {"duration": 180.0, "tempo": 120.0, "key": "C"}}
    assert AudioFeatures.model_validate(results["extract_features"]).key == "C"


async def test_5_3_output_multiple_values(broker: InMemoryBroker) -> None:
    from taskiq_fleet import pipeline_task

    @broker.task
    def split(data: str) -> tuple[str, str]:
        return data[:10], data[10:]  # Returns two values

    task = await Pipeline(broker).call_next(split).kiq("abcdefghijklmno")
    # the two values travel as JSON, so the tuple arrives as a list
    assert (await task.wait_result(timeout=30)).return_value == ["abcdefghij", "klmno"]

    # With @pipeline_task(outputs=["first", "second"])
    @pipeline_task(outputs=["head", "tail"])
    def split(data):  # type: ignore[no-redef, no-untyped-def]
        return data[:10], data[10:]

    # Produces two outputs: "head" and "tail"

    spec = flow_of(split)
    assert spec is not None
    assert spec.outputs == ("head", "tail")
    assert split("abcdefghijklmno") == ("abcdefghij", "klmno")


# -- 6. Retry configuration ----------------------------------------------------------------


async def test_6_1_decorator_level_retry(broker: InMemoryBroker) -> None:
    calls: list[int] = []

    def possibly_fails() -> None:  # stand-in: here it never fails
        calls.append(1)

    @broker.task(retry_policy={"max_retries": 3, "delay": 5.0, "backoff": 2.0})
    async def flaky_task():  # type: ignore[no-untyped-def]
        # Will retry up to 3 times with delays: 5s, 10s, 20s
        possibly_fails()

    pipeline = DataflowPipeline.from_tasks(broker, [flaky_task])
    assert await pipeline.kiq_dataflow() == {"flaky_task": None}
    assert calls == [1]
    (node,) = pipeline.build().nodes
    assert node.retry.max_retries == 3
    assert [node.retry.delay_for(n) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]


async def test_6_2_pipeline_level_retry(broker: InMemoryBroker) -> None:
    attempts: list[int] = []

    @broker.task
    def flaky(x: int) -> int:  # stand-in: fails on its first two attempts
        attempts.append(x)
        if len(attempts) < 3:
            raise ConnectionError("network down")
        return x + 1

    pipeline = Pipeline(broker)
    pipeline.with_retry(max_attempts=3, delay=1.0, backoff=1.5)

    assert pipeline.retry == RetryPolicy(max_retries=2, delay=1.0, backoff=1.5)
    task = await pipeline.call_next(flaky).kiq(1)  # its third attempt succeeds
    assert (await task.wait_result(timeout=30)).return_value == 2
    assert attempts == [1, 1, 1]


async def test_6_3_conditional_retry(broker: InMemoryBroker) -> None:
    from taskiq_fleet import RetryException

    class NetworkError(Exception):  # stand-in
        pass

    class ValidationError(Exception):  # stand-in
        pass

    planned: list[type[Exception] | None] = []  # stand-in: what each call does
    calls: list[str] = []

    def call_external_api() -> None:  # stand-in
        outcome = planned.pop(0)
        calls.append(outcome.__name__ if outcome else "ok")
        if outcome is not None:
            raise outcome("from the stand-in")

    @broker.task
    async def task_with_conditional_retry():  # type: ignore[no-untyped-def]
        try:
            call_external_api()
        except NetworkError:
            raise RetryException("Network error, retry allowed")  # noqa: B904
        except ValidationError:
            raise  # No retry, fail immediately

    pipeline = DataflowPipeline.from_tasks(broker, [task_with_conditional_retry])
    planned[:] = [NetworkError, NetworkError, None]
    assert await pipeline.kiq_dataflow() == {"task_with_conditional_retry": None}
    assert calls == ["NetworkError", "NetworkError", "ok"]

    calls.clear()
    planned[:] = [ValidationError, None]
    with pytest.raises(PipelineError, match="ValidationError"):
        await pipeline.kiq_dataflow()
    assert calls == ["ValidationError"]


# -- 7. Task discovery & registry ----------------------------------------------------------


async def test_7_2_manual_registration(broker: InMemoryBroker) -> None:
    from taskiq_fleet import DataflowRegistry, ExecutionEngine, pipeline_task

    @broker.task
    def process_data(data: list[int]) -> int:  # stand-in
        return sum(data)

    @broker.task
    @pipeline_task(output="raw")
    def load(source: str) -> list[int]:  # stand-in: a task of `my_tasks`
        return [int(c) for c in source]

    my_tasks = SimpleNamespace(ALL_TASKS=[load])  # stand-in for `import my_tasks`

    registry = DataflowRegistry()

    # Register with explicit I/O mapping
    registry.register_task(
        task=process_data,
        output="processed",
        inputs=["raw"],  # depends on task that outputs "raw"
    )

    # Discover from module
    for task in my_tasks.ALL_TASKS:
        registry.register_task_from_object(task)

    assert registry.tasks == [process_data, load]
    results = await ExecutionEngine(broker, registry.build_dag()).execute(source="123")
    assert results == {"raw": [1, 2, 3], "processed": 6}


# -- 8. Writing testable tasks -------------------------------------------------------------


async def test_8_testable_tasks(broker: InMemoryBroker) -> None:
    @broker.task
    def process(data: dict) -> dict:
        # Pure function: output depends only on input
        return {"result": data["value"] * 2}

    # Unit test
    def test_process():  # type: ignore[no-untyped-def]
        assert process({"value": 5}) == {"result": 10}

    test_process()
    task = await Pipeline(broker).call_next(process).kiq({"value": 5})
    assert (await task.wait_result(timeout=30)).return_value == {"result": 10}


# The document's own pytest example, as written: pytest runs it.


@pytest.fixture
def test_broker():  # type: ignore[no-untyped-def]
    return InMemoryBroker(await_inplace=True)


async def test_task_execution(test_broker):  # type: ignore[no-untyped-def]
    @test_broker.task
    async def my_task(x: int) -> int:
        return x + 1

    result = await my_task.kiq(5)
    value = await result.wait_result()
    assert value.return_value == 6


# -- 9. Common patterns --------------------------------------------------------------------


async def test_9_1_idempotency(broker: InMemoryBroker) -> None:
    from taskiq_fleet import pipeline_task

    class Cache:  # stand-in
        def __init__(self) -> None:
            self.values: dict[str, Any] = {}

        def get(self, key: str) -> Any:
            return self.values.get(key)

        def set(self, key: str, value: Any, ttl: int) -> None:
            self.values[key] = value

    cache = Cache()
    computed: list[str] = []

    def heavy_compute(user_id: str) -> dict[str, str]:  # stand-in
        computed.append(user_id)
        return {"user": user_id, "status": "processed"}

    @broker.task
    @pipeline_task(output="user_processed")
    def process_user(user_id: str) -> dict:
        # Check if already processed
        if cache.get(f"processed:{user_id}"):
            return {"status": "already_done"}

        # Perform processing
        result = heavy_compute(user_id)
        cache.set(f"processed:{user_id}", result, ttl=3600)
        return result

    pipeline = DataflowPipeline.from_tasks(broker, [process_user])
    first = await pipeline.kiq_dataflow(user_id="u1")
    again = await pipeline.kiq_dataflow(user_id="u1")
    assert first == {"user_processed": {"user": "u1", "status": "processed"}}
    assert again == {"user_processed": {"status": "already_done"}}
    assert computed == ["u1"]


async def test_9_2_composability(broker: InMemoryBroker) -> None:
    @broker.task
    def validate(data):  # type: ignore[no-untyped-def]
        assert isinstance(data, dict)  # stand-in for `...`
        return data

    @broker.task
    def transform(data):  # type: ignore[no-untyped-def]
        return {**data, "transformed": True}  # stand-in for `...`

    @broker.task
    def enrich(data):  # type: ignore[no-untyped-def]
        return {**data, "enriched": True}  # stand-in for `...`

    # Compose in multiple pipelines
    pipeline1 = Pipeline(broker).call_next(validate).call_next(transform)
    pipeline2 = Pipeline(broker).call_next(validate).call_next(enrich)

    task1 = await pipeline1.kiq({"id": 1})
    task2 = await pipeline2.kiq({"id": 2})
    assert (await task1.wait_result(timeout=30)).return_value == {"id": 1, "transformed": True}
    assert (await task2.wait_result(timeout=30)).return_value == {"id": 2, "enriched": True}


async def test_9_3_progress_reporting(broker: InMemoryBroker) -> None:
    def process(item: int) -> int:  # stand-in
        return item * 2

    @broker.task
    async def long_task(items: list, progress_callback=None):  # type: ignore[no-untyped-def]
        for i, item in enumerate(items):
            result = process(item)  # noqa: F841
            if progress_callback:
                await progress_callback(i / len(items))
        return "done"

    reported: list[float] = []

    async def progress(fraction: float) -> None:
        reported.append(fraction)

    assert await long_task([1, 2, 3, 4], progress_callback=progress) == "done"
    assert reported == [0.0, 0.25, 0.5, 0.75]
    task = await Pipeline(broker).call_next(long_task).kiq([1, 2, 3])  # no callback: no report
    assert (await task.wait_result(timeout=30)).return_value == "done"
    assert reported == [0.0, 0.25, 0.5, 0.75]
