"""The openb replay's derived workloads and its exhaustive FGD reference (benchmarks/)."""

from __future__ import annotations

from benchmarks.fgd_reference import FGDReference, typical_shapes
from benchmarks.openb_trace import Task, workload
from shared.resources import GPUDevice, WorkerSpec


def task(name: str, cpu: int, gpus: int = 0, milli: int = 0, spec: str = "") -> Task:
    return Task(name, cpu, 1024, gpus, milli, spec)


NODES = [
    WorkerSpec(
        name="a", cpu=32, ram_mb=65536, gpus=tuple(GPUDevice(index=i, model="T4") for i in range(2))
    ),
    WorkerSpec(
        name="b", cpu=96, ram_mb=65536, gpus=tuple(GPUDevice(index=i, model="G2") for i in range(8))
    ),
]
TASKS = sorted(
    [
        *(task(f"cpu-{i}", 4000) for i in range(4)),
        *(task(f"share-{i}", 2000, 1, 500) for i in range(6)),
        *(task(f"one-{i}", 8000, 1, 1000) for i in range(6)),
        *(task(f"four-{i}", 16000, 4, 1000) for i in range(2)),
    ],
    key=lambda t: t.name,
)


def test_share_makes_every_gpu_task_a_share_of_one_device() -> None:
    derived = workload("share", TASKS, NODES)
    assert len(derived) == len(TASKS)
    assert all(t.is_share for t in derived if t.num_gpu)
    assert sum(1 for t in derived if not t.num_gpu) == 4


def test_multigpu_asks_half_of_the_gpu_in_multi_gpu_tasks() -> None:
    derived = workload("multigpu", TASKS, NODES)
    total = sum(t.gpu_demand for t in derived)
    assert 2 * sum(t.gpu_demand for t in derived if t.num_gpu > 1) >= total
    assert set(TASKS) <= set(derived)


def test_gpuspec_constrains_a_third_of_the_gpu_tasks_to_a_model_that_can_hold_them() -> None:
    derived = workload("gpuspec", TASKS, NODES)
    constrained = [t for t in derived if t.gpu_spec]
    assert len(constrained) == round(sum(1 for t in TASKS if t.num_gpu) / 3)
    assert all(t.models in (("T4",), ("G2",)) for t in constrained)
    assert all(t.models == ("G2",) for t in constrained if t.num_gpu == 4)


def test_cpu250_has_two_and_a_half_times_the_cpu_only_tasks() -> None:
    derived = workload("cpu250", TASKS, NODES)
    assert sum(1 for t in derived if not t.num_gpu) == 10
    assert [t for t in derived if t.num_gpu] == [t for t in TASKS if t.num_gpu]


def test_the_same_workload_for_every_call() -> None:
    assert workload("gpuspec", TASKS, NODES) == workload("gpuspec", TASKS, NODES)


def test_typical_shapes_cover_the_popularity_asked() -> None:
    shapes = typical_shapes(TASKS, popularity=0.6)
    assert sum(count for _, count in shapes) >= 0.6 * len(TASKS)
    assert [count for _, count in shapes] == sorted((count for _, count in shapes), reverse=True)


def test_the_reference_keeps_a_whole_gpu_its_cores() -> None:
    """FGD's measure sees that a share on the small node leaves its other GPU without cores."""
    nodes = [
        WorkerSpec(name="a-small", cpu=4, ram_mb=8192, gpus=(GPUDevice(index=0, model="T4"),)),
        WorkerSpec(
            name="b-big",
            cpu=16,
            ram_mb=8192,
            gpus=tuple(GPUDevice(index=i, model="T4") for i in range(3)),
        ),
    ]
    half, whole = task("half", 4000, 1, 500), task("whole", 4000, 1, 1000)
    reference = FGDReference(nodes, [half, whole] * 10)
    assert [reference.place(t) for t in (half, half, whole, whole, whole)] == [True] * 5
    assert reference.allocated() == 4000
    assert reference.stranded(4) == 0
