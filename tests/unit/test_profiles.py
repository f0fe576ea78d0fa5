from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from taskiq import AsyncTaskiqDecoratedTask, InMemoryBroker, TaskiqMessage, TaskiqMiddleware

from shared.labels import LabelSelector, Op, PreferredLabel, parse_selector
from shared.wire import label_keys
from taskiq_fleet import ResourceRequest
from taskiq_fleet.profiles import (
    REQUEST_ATTR,
    CPUProfile,
    GPUProfile,
    LabelProfile,
    RAMProfile,
    ResourceLabelsMiddleware,
    ResourceProfile,
    TaskResourceProfile,
    attach_request_label,
    request_from_labels,
    request_label_value,
    request_of,
)

Decorator = Callable[[Any], Any]


class Recorder(TaskiqMiddleware):
    """Placed after ResourceLabelsMiddleware, so it sees what goes on the wire."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[TaskiqMessage] = []
        self.executed: list[TaskiqMessage] = []

    def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        self.sent.append(message.model_copy(deep=True))
        return message

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        self.executed.append(message.model_copy(deep=True))
        return message


@pytest.fixture
def broker() -> InMemoryBroker:
    return InMemoryBroker(await_inplace=True)


def _work(data: int) -> int:
    return data * 2


def make_task(
    broker: InMemoryBroker, below: Sequence[Decorator], above: Sequence[Decorator]
) -> AsyncTaskiqDecoratedTask[Any, Any]:
    """Apply `below` innermost-last like stacked decorators under @broker.task, then `above`."""

    def work(data: int) -> int:
        return data * 2

    target: Any = work
    for deco in reversed(below):
        target = deco(target)
    task: Any = broker.task(task_name="tests.work")(target)
    for deco in reversed(above):
        task = deco(task)
    return task  # type: ignore[no-any-return]


COMBINATIONS: list[tuple[str, list[Decorator], ResourceRequest]] = [
    (
        "documented-combined",
        [CPUProfile(cpu_units=2), RAMProfile(ram_mb=4096)],
        ResourceRequest(cpu=2.0, ram_mb=4096),
    ),
    (
        "gpu-and-labels",
        [
            GPUProfile(gpus=1, models=["A100", "H100"], gpu_mem_mb=40000),
            LabelProfile(
                required=["zone=eu", "tier notin (spot)", "ssd"], preferred={"rack=r1": 5}
            ),
        ],
        ResourceRequest(
            gpus=1.0,
            gpu_models=("A100", "H100"),
            gpu_mem_mb=40000,
            required=(
                LabelSelector(key="ssd", op=Op.EXISTS),
                LabelSelector(key="tier", op=Op.NOT_IN, values=("spot",)),
                LabelSelector(key="zone", op=Op.EQUALS, values=("eu",)),
            ),
            preferred=(
                PreferredLabel(
                    selector=LabelSelector(key="rack", op=Op.EQUALS, values=("r1",)), weight=5
                ),
            ),
        ),
    ),
    (
        "custom-and-policy",
        [
            ResourceProfile(resources={"licenses": 2}, policy="binpack"),
            CPUProfile(cpu_units=0.5),
            ResourceProfile(resources={"tokens": 1.5}),
        ],
        ResourceRequest(cpu=0.5, resources={"licenses": 2.0, "tokens": 1.5}, policy="binpack"),
    ),
    (
        "labels-accumulate",
        [LabelProfile(required=["b=1"]), LabelProfile(required={"a": ["x", "y"]}, preferred=["c"])],
        ResourceRequest(
            required=(parse_selector("a in (x, y)"), parse_selector("b=1")),
            preferred=(PreferredLabel(selector=parse_selector("c")),),
        ),
    ),
    (
        "task-resource-profile",
        [TaskResourceProfile(estimated_memory_mb=512, estimated_cpu_cores=2.0), GPUProfile(0.25)],
        ResourceRequest(cpu=2.0, ram_mb=512, gpus=0.25),
    ),
]


def _placements(profiles: list[Decorator]) -> list[tuple[list[Decorator], list[Decorator]]]:
    """Every order of the profiles, all below, all above, and split around @broker.task."""
    out = []
    for perm in itertools.permutations(profiles):
        for cut in range(len(perm) + 1):
            out.append((list(perm[:cut]), list(perm[cut:])))
    return out


@pytest.mark.parametrize(
    ("profiles", "expected"),
    [pytest.param(p, e, id=name) for name, p, e in COMBINATIONS],
)
def test_any_order_and_placement_gives_the_same_request(
    broker: InMemoryBroker, profiles: list[Decorator], expected: ResourceRequest
) -> None:
    for above, below in _placements(profiles):
        task = make_task(broker, below=below, above=above)
        assert request_of(task) == expected, (above, below)
        attach_request_label(task)
        assert request_from_labels(task.labels) == expected


def test_documented_order_stores_attribute_copied_by_wraps(broker: InMemoryBroker) -> None:
    @broker.task
    @CPUProfile(cpu_units=2)
    @RAMProfile(ram_mb=4096)
    def heavy_computation(data: int) -> int:
        return data + 1

    request = getattr(heavy_computation, REQUEST_ATTR)
    assert (request.cpu, request.ram_mb) == (2.0, 4096)
    assert request_of(heavy_computation.original_func) == request
    assert label_keys.RESOURCES not in heavy_computation.labels
    attach_request_label(heavy_computation)
    assert json.loads(heavy_computation.labels[label_keys.RESOURCES]) == {
        "version": 1,
        "cpu": 2.0,
        "ram_mb": 4096,
    }


async def test_profile_above_task_writes_label_and_registered_task(
    broker: InMemoryBroker,
) -> None:
    @CPUProfile(cpu_units=2)
    @broker.task
    async def other(x: int) -> int:
        return x + 1

    assert broker.find_task(other.task_name) is other
    assert request_from_labels(other.labels) == ResourceRequest(cpu=2)
    assert await other(1) == 2


def test_profile_above_task_updates_a_distinct_registered_copy(broker: InMemoryBroker) -> None:
    task = make_task(broker, below=[], above=[])
    clone = copy.copy(task)
    broker._register_task(task.task_name, clone)
    RAMProfile(ram_mb=128)(task)
    assert request_of(clone) == ResourceRequest(ram_mb=128)
    assert request_from_labels(clone.labels) == ResourceRequest(ram_mb=128)


def test_label_dict_shared_between_tasks_is_not_mutated(broker: InMemoryBroker) -> None:
    shared: dict[str, Any] = {"priority": 1}
    first = broker.task(task_name="first")(_work)
    second = broker.task(task_name="second")(lambda x: x)
    first.labels = second.labels = shared
    CPUProfile(cpu_units=3)(first)
    assert label_keys.RESOURCES in first.labels
    assert second.labels == {"priority": 1}


def test_sync_function_stays_the_same_callable(broker: InMemoryBroker) -> None:
    def add(a: int, b: int) -> int:
        return a + b

    decorated = CPUProfile(cpu_units=0.5)(RAMProfile(ram_mb=64)(add))
    assert decorated is add
    assert decorated(2, 3) == 5
    task = broker.task(decorated)
    assert task(2, 3) == 5
    assert request_of(task) == ResourceRequest(cpu=0.5, ram_mb=64)


@pytest.mark.parametrize(
    "request_",
    [
        ResourceRequest(),
        ResourceRequest(cpu=0.25, ram_mb=1, resources={"licenses": 2}),
        ResourceRequest(gpus=2, gpu_models=("H100",), gpu_mem_mb=80000, policy="spread"),
        ResourceRequest(
            cpu=0,
            required=(parse_selector("zone in (eu, us)"), parse_selector("ssd")),
            preferred=(PreferredLabel(selector=parse_selector("rack!=r2"), weight=100),),
        ),
    ],
)
def test_label_round_trips_and_always_has_version(request_: ResourceRequest) -> None:
    value = request_label_value(request_)
    assert isinstance(value, str)
    assert json.loads(value)["version"] == 1
    assert request_from_labels({label_keys.RESOURCES: value}) == request_
    assert request_from_labels({label_keys.RESOURCES: value.encode()}) == request_


def test_label_of_default_request_is_compact() -> None:
    assert request_label_value(ResourceRequest()) == '{"version":1}'


def test_undecorated_task_and_function_get_default(broker: InMemoryBroker) -> None:
    assert request_of(broker.task(_work)) == ResourceRequest()
    assert request_of(lambda: None) == ResourceRequest()
    assert request_from_labels({"other": "x"}) is None


@pytest.mark.parametrize("raw", ["{not json", '{"cpu": -1}', '{"bogus": 1}', 42])
def test_malformed_label_names_the_label(raw: Any) -> None:
    with pytest.raises(ValueError, match=label_keys.RESOURCES):
        request_from_labels({label_keys.RESOURCES: raw})


async def test_middleware_ships_label_for_foreign_broker(broker: InMemoryBroker) -> None:
    recorder = Recorder()
    broker.add_middlewares(ResourceLabelsMiddleware(), recorder)

    @broker.task
    @CPUProfile(cpu_units=2)
    @RAMProfile(ram_mb=4096)
    def heavy(data: int) -> int:
        return data * 2

    @broker.task
    def plain(data: int) -> int:
        return data

    await heavy.kiq(1)
    await plain.kiq(1)
    await heavy.kicker().with_labels(**{label_keys.RESOURCES: '{"version":1,"cpu":7}'}).kiq(1)

    expected = ResourceRequest(cpu=2, ram_mb=4096)
    assert request_from_labels(recorder.sent[0].labels) == expected
    assert request_from_labels(recorder.executed[0].labels) == expected
    assert recorder.sent[1].labels.get(label_keys.RESOURCES) is None
    assert request_from_labels(recorder.sent[2].labels) == ResourceRequest(cpu=7)


def _decorate_with(profile: Callable[[], Decorator]) -> None:
    @profile()
    def f() -> None:
        return None


@pytest.mark.parametrize(
    ("profile", "match"),
    [
        (lambda: CPUProfile(cpu_units=-1), "greater than or equal to 0"),
        (lambda: CPUProfile(cpu_units=0.0001), "finer than 0.001"),
        (lambda: RAMProfile(ram_mb=-5), "greater than or equal to 0"),
        (lambda: GPUProfile(gpus=1.5), "whole number"),
        (lambda: GPUProfile(gpus=0, models=["A100"]), "gpus=0"),
        (lambda: LabelProfile(required=["zone ~ (a)"]), "unknown selector operator"),
        (lambda: LabelProfile(preferred={"rack=r1": 0}), "greater than or equal to 1"),
        (lambda: ResourceProfile(cpus=2), "unknown resource name"),
        (lambda: ResourceProfile(resources={"cpu": 1}), "built-in resource"),
        (lambda: TaskResourceProfile(estimated_cpu_cores=-1), "greater than or equal to 0"),
        (lambda: TaskResourceProfile(estimated_cpu_cores=0.0004), "finer than 0.001"),
    ],
)
def test_invalid_values_fail_at_decoration(profile: Callable[[], Decorator], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _decorate_with(profile)


@pytest.mark.parametrize(
    ("first", "second", "match"),
    [
        (CPUProfile(cpu_units=2), CPUProfile(cpu_units=4), "cpu is stated twice"),
        (CPUProfile(), TaskResourceProfile(estimated_cpu_cores=3), "cpu is stated twice"),
        (
            ResourceProfile(resources={"licenses": 1}),
            ResourceProfile(resources={"licenses": 2}),
            r"resources\['licenses'\] is stated twice",
        ),
    ],
)
def test_conflicting_profiles_fail_in_both_orders(
    broker: InMemoryBroker, first: Decorator, second: Decorator, match: str
) -> None:
    for below in ([first, second], [second, first]):
        with pytest.raises(ValueError, match=match):
            make_task(broker, below=below, above=[])


def test_restating_the_same_value_is_fine(broker: InMemoryBroker) -> None:
    task = make_task(broker, below=[CPUProfile(2)], above=[ResourceProfile(cpu=2.0)])
    assert request_of(task) == ResourceRequest(cpu=2)


def test_gpu_models_as_single_string() -> None:
    assert GPUProfile(models="A100").request.gpu_models == ("A100",)


@pytest.mark.parametrize(
    ("profile", "cpu", "ram_mb"),
    [
        (TaskResourceProfile(), 1.0, 0),
        (TaskResourceProfile(estimated_memory_mb=512, estimated_cpu_cores=2.0), 2.0, 512),
        (TaskResourceProfile(estimated_memory_mb=256, io_bound=True), 0.25, 256),
        (TaskResourceProfile(estimated_cpu_cores=3.0, io_bound=True), 0.75, 0),
        (TaskResourceProfile(estimated_cpu_cores=0.002, io_bound=True), 0.001, 0),
        (TaskResourceProfile(estimated_cpu_cores=0, io_bound=True), 0.0, 0),
    ],
)
def test_task_resource_profile_mapping(
    profile: TaskResourceProfile, cpu: float, ram_mb: int
) -> None:
    assert profile.to_request() == ResourceRequest(cpu=cpu, ram_mb=ram_mb)


def test_task_resource_profile_is_frozen_and_stacks(broker: InMemoryBroker) -> None:
    profile = TaskResourceProfile(estimated_memory_mb=256, io_bound=True)
    with pytest.raises(ValidationError):
        profile.io_bound = False  # type: ignore[misc]

    @broker.task
    @profile
    @LabelProfile(required=["zone=eu"])
    def fetch(url: str) -> str:
        return url

    assert request_of(fetch) == ResourceRequest(
        cpu=0.25, ram_mb=256, required=(parse_selector("zone=eu"),)
    )
    assert fetch("u") == "u"


@given(
    cpu=st.integers(min_value=0, max_value=64_000).map(lambda m: m / 1000),
    ram=st.integers(min_value=0, max_value=1 << 20),
    labels=st.lists(st.sampled_from(["a=1", "b in (x, y)", "c", "d!=2"]), max_size=4),
)
def test_order_never_matters(cpu: float, ram: int, labels: list[str]) -> None:
    profiles: list[Decorator] = [CPUProfile(cpu), RAMProfile(ram), LabelProfile(labels)]
    results = set()
    for perm in itertools.permutations(profiles):

        def f() -> None:
            return None

        for deco in reversed(perm):
            deco(f)
        results.add(request_label_value(request_of(f)))
    assert len(results) == 1
    assert request_of(f) == ResourceRequest(
        cpu=cpu, ram_mb=ram, required=tuple(sorted(set(map(parse_selector, labels)), key=str))
    )


class _CapturingBackend:
    """Stands in for the coordinator client: keeps the Submit documents the broker sends."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []

    async def submit_document(self, run_id: str, document: dict[str, Any]) -> Any:
        self.documents.append(document)
        return _Handle(run_id)


class _Handle:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.done = False

    def on_update(self, listener: Any) -> None:
        """The broker listens for the run's end; this run never ends."""


@pytest.mark.parametrize("profile_above", [True, False])
async def test_node_request_and_label_agree_with_a_queue(profile_above: bool) -> None:
    """A queue selector and a stacked profile give one request: the node's, and the label
    shipped with the node says exactly the same (it used to lack the queue selector)."""
    from taskiq_fleet.broker import FleetBroker

    fleet = FleetBroker(nats="in-process")
    backend = _CapturingBackend()
    fleet.client = backend  # type: ignore[assignment]

    def work(x: int) -> int:
        return x

    if profile_above:
        task = CPUProfile(cpu_units=2)(fleet.task(queue="gpu")(work))
    else:
        task = fleet.task(queue="gpu")(CPUProfile(cpu_units=2)(work))
    await task.kiq(1)

    (node,) = backend.documents[0]["dag"]["nodes"]
    request = ResourceRequest.model_validate(node["request"])
    queue = LabelSelector(key=label_keys.QUEUE, op=Op.EQUALS, values=("gpu",))
    assert request.cpu == 2
    assert queue in request.required
    assert request_from_labels(node["labels"]) == request
    assert request_of(task) == request
