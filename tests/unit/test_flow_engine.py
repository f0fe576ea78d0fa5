"""DataflowRegistry, DAGBuilder and ExecutionEngine (Execution §7, Performance §11,
Tasks §7.2) in process, on InMemoryBroker."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import pytest
from taskiq import InMemoryBroker

from taskiq_fleet import (
    DAGBuilder,
    DataflowRegistry,
    ExecutionEngine,
    LabelSelector,
    Node,
    PipelineError,
    ResourceRequest,
    pipeline_task,
)
from taskiq_fleet.flow.runner import use_local_fleet
from taskiq_fleet.inprocess import LocalFleet

broker = InMemoryBroker()


@broker.task("engine.load")
def load(source_file: str) -> list[str]:
    return [f"{source_file}:{i}" for i in range(3)]


@broker.task("engine.process")
def process(raw: list[str]) -> list[str]:
    return [r.upper() for r in raw]


@broker.task("engine.save")
def save(clean: list[str]) -> int:
    return len(clean)


@broker.task("engine.process_data")
def process_data(data: list[str]) -> str:
    return "+".join(data)


@broker.task("engine.fail")
def fail(clean: list[str]) -> int:
    raise RuntimeError("no space left")


class TextTasks:
    """An object exposing annotated tasks, for ``register_task_from_object``."""

    @broker.task("engine.split")
    @pipeline_task(output="words")
    def split(text: str) -> list[str]:
        return text.split()

    @broker.task("engine.count")
    @pipeline_task(output="count")
    def count(words: list[str]) -> int:
        return len(words)

    @broker.task("engine.unannotated")
    def helper(words: list[str]) -> None:
        """Not annotated: left out when registering the object."""


ALL_TASKS = [TextTasks.split, TextTasks.count]


async def test_tasks_guide_section_7_2_manual_registration() -> None:
    registry = DataflowRegistry()
    registry.register_task(load, output="raw")
    # Register with explicit I/O mapping
    registry.register_task(
        task=process_data,
        output="processed",
        inputs=["raw"],  # depends on task that outputs "raw"
    )
    dag = registry.build_dag()
    (node,) = [n for n in dag.nodes if n.outputs == ("processed",)]
    assert node.inputs == {"data": "raw"}  # not a parameter name: the first free one
    results = await ExecutionEngine(broker, dag).execute({"source_file": "f"})
    assert results["processed"] == "f:0+f:1+f:2"


async def test_register_task_from_object() -> None:
    # Discover from module
    registry = DataflowRegistry()
    for task in ALL_TASKS:
        registry.register_task_from_object(task)
    from_class = DataflowRegistry().register_task_from_object(TextTasks)
    from_instance = DataflowRegistry().register_task_from_object(TextTasks())
    from_list = DataflowRegistry().register_task_from_object(ALL_TASKS)
    for reg in (registry, from_class, from_instance, from_list):
        assert reg.tasks == ALL_TASKS
        assert await ExecutionEngine(broker, reg.build_dag()).execute(text="a b c") == {
            "words": ["a", "b", "c"],
            "count": 3,
        }
    with pytest.raises(ValueError, match="holds no @pipeline_task task"):
        DataflowRegistry().register_task_from_object(object())
    with pytest.raises(TypeError, match="not a taskiq task"):
        DataflowRegistry().register_task(print)


async def test_dag_builder() -> None:
    dag = (
        DAGBuilder()
        .add_task(load, output="raw")
        .add_task(process, output="clean", inputs=["raw"])
        .add_task(save, output="saved", inputs=["clean"])
        .build()
    )
    registry = DataflowRegistry().register_task(load, output="raw")
    registry.register_task(process, output="clean").register_task(save, output="saved")
    assert DAGBuilder(registry).build() == dag == registry.build_dag()
    assert "level 2: engine.save -> saved" in registry.print_dag()
    results = await ExecutionEngine(broker, dag, max_parallel=1).execute(source_file="x")
    assert results["saved"] == 3


@pytest.mark.parametrize(
    ("registrations", "error"),
    [
        ([], "No DAG built"),
        ([(load, "raw", None), (process, "raw", None)], "also produced by"),
        ([(process, "clean", ["raw"]), (process_data, "raw", ["clean"])], "cycle"),
    ],
)
def test_build_errors(registrations: list[tuple[Any, str, list[str] | None]], error: str) -> None:
    registry = DataflowRegistry()
    for task, output, inputs in registrations:
        registry.register_task(task, output=output, inputs=inputs)
    with pytest.raises(ValueError, match=error):
        registry.build_dag()


async def test_missing_input_and_failure() -> None:
    registry = DataflowRegistry().register_task(load, output="raw")
    registry.register_task(process, output="clean").register_task(fail, output="saved")
    engine = ExecutionEngine(broker, registry.build_dag())
    with pytest.raises(ValueError, match="source_file"):
        await engine.execute()
    with pytest.raises(PipelineError) as caught:
        await engine.execute(inputs={"source_file": "d"})
    assert caught.value.partial_results["clean"] == ["D:0", "D:1", "D:2"]
    assert "saved" not in caught.value.partial_results
    assert caught.value.failed_step is not None
    assert "fail" in caught.value.failed_step


# -- custom routing: the GPU engine of Performance §11 ------------------------------------

routed = InMemoryBroker()


@routed.task("engine.extract")
@pipeline_task(output="audio")
def extract(path: str) -> str:
    return f"audio<{path}>"


@routed.task("engine.embed", requires_gpu=True)
@pipeline_task(output="vector")
def embed(audio: str) -> int:
    return len(audio)


@routed.task("engine.tag")
@pipeline_task(output="tags")
def tag(audio: str) -> list[str]:
    return [audio]


class GPUOptimizedEngine(ExecutionEngine):
    seen: list[tuple[str, dict[str, Any]]]

    async def schedule_task(
        self, task_node: Node, inputs: Mapping[str, Any]
    ) -> ResourceRequest | None:
        self.seen = [*getattr(self, "seen", []), (task_node.id, dict(inputs))]
        # Custom scheduling logic: route GPU tasks to GPU workers
        if task_node.labels.get("requires_gpu"):
            return task_node.request.model_copy(update={"gpus": 1})
        return await super().schedule_task(task_node, inputs)


class ZoneEngine(ExecutionEngine):
    async def schedule_task(
        self, task_node: Node, inputs: Mapping[str, Any]
    ) -> ResourceRequest | None:
        if task_node.labels.get("zone"):
            zone = LabelSelector(key="zone", op="equals", values=(str(task_node.labels["zone"]),))
            return ResourceRequest(cpu=0.5, required=(zone,))
        return None


WORKERS = [
    {"name": "cpu-box", "cpu": 8, "ram_mb": 8192, "labels": {"zone": "a"}},
    {"name": "gpu-box", "cpu": 8, "ram_mb": 8192, "gpus": 1, "labels": {"zone": "b"}},
]


async def test_gpu_engine_routes_labelled_nodes_to_the_gpu_worker() -> None:
    async with LocalFleet(routed, WORKERS) as fleet:
        use_local_fleet(routed, fleet)
        registry = DataflowRegistry().register_task_from_object([extract, embed, tag])
        dag = registry.build_dag()
        assert all(n.request.gpus == 0 for n in dag.nodes)
        engine = GPUOptimizedEngine(routed, dag)
        results = await engine.execute(inputs={"path": "song.wav"})
        assert results == {"audio": "audio<song.wav>", "vector": 15, "tags": ["audio<song.wav>"]}
        assert engine.view is not None
        assert engine.scheduled is not None
        assert [i for i, _ in engine.seen] == [n.id for n in dag.nodes]
        assert all(given == {"path": "song.wav"} for _, given in engine.seen)
        by_task = {n.task: n for n in engine.view.nodes}
        assert by_task["engine.embed"].worker == "gpu-box"
        assert len(by_task["engine.embed"].gpu_devices) == 1
        assert by_task["engine.extract"].worker == "cpu-box"  # CPU work avoids the GPU host
        scheduled = {n.task: n for n in engine.scheduled.nodes}
        assert scheduled["engine.embed"].request.gpus == 1
        assert "requires_gpu" not in scheduled["engine.embed"].labels  # seen, not shipped


def test_register_task_from_a_module() -> None:
    module = sys.modules[__name__]
    registry = DataflowRegistry().register_task_from_object(module)
    assert registry.tasks == [extract, embed, tag]  # module-level annotated tasks, in order


async def test_label_selector_from_schedule_task() -> None:
    async with LocalFleet(routed, WORKERS) as fleet:
        use_local_fleet(routed, fleet)
        registry = DataflowRegistry()
        registry.register_task(extract, labels={"zone": "b"})
        registry.register_task(tag, labels={"zone": "a"})
        engine = ZoneEngine(routed, registry.build_dag())
        await engine.execute(path="p")
        assert engine.view is not None
        workers = {n.task: n.worker for n in engine.view.nodes}
        assert workers == {"engine.extract": "gpu-box", "engine.tag": "cpu-box"}


async def test_schedule_task_must_return_a_request() -> None:
    class Broken(ExecutionEngine):
        async def schedule_task(self, task_node: Node, inputs: Mapping[str, Any]) -> Any:
            return {"gpus": 1}

    dag = DataflowRegistry().register_task(load, output="raw").build_dag()
    with pytest.raises(TypeError, match="expected a ResourceRequest"):
        await Broken(broker, dag).execute(source_file="s")
