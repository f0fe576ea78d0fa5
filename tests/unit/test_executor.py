from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from taskiq import InMemoryBroker

from shared.context import current_attempt, current_gpu_devices
from shared.resources import ResourceRequest, WorkerSpec
from shared.wire import codec as wire_codec
from shared.wire.protocol import Assignment, AttemptRef, Outcome, PayloadRef, decode_each
from tests.unit.executor_tasks import Probe, Recorder, make_broker
from worker_agent.executor import TaskExecutor, UnknownTask
from worker_agent.service import Agent, AgentSettings

WORKER = "host-a"


def assignment(
    task: str, *args: Any, attempt: int = 1, gpus: tuple[int, ...] = (), **kw: Any
) -> Assignment:
    timeout = kw.pop("timeout", None)
    labels = kw.pop("labels", {})
    return Assignment(
        ref=AttemptRef(run_id="run1", node_id=task.replace("_", "-"), attempt=attempt),
        task_name=task,
        args=args,
        kwargs=kw,
        labels=labels,
        request=ResourceRequest(gpus=float(len(gpus))),
        gpu_devices=gpus,
        timeout=timeout,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def broker_and_recorder(probe: Probe) -> tuple[InMemoryBroker, Recorder]:
    return make_broker(probe)


@pytest.fixture
async def executor(
    broker_and_recorder: tuple[InMemoryBroker, Recorder], probe: Probe
) -> AsyncIterator[TaskExecutor]:
    broker, _ = broker_and_recorder
    ex = TaskExecutor(broker, worker=WORKER, clock=Clock())
    yield ex
    probe.release.set()
    ex.close()


@pytest.fixture
def recorder(broker_and_recorder: tuple[InMemoryBroker, Recorder]) -> Recorder:
    return broker_and_recorder[1]


async def test_async_task_succeeds_with_clock_times(executor: TaskExecutor) -> None:
    out = await executor.run(assignment("add", 2, 3))
    assert out.status == "succeeded"
    assert out.return_value == 5
    assert out.error is None
    assert out.worker == WORKER
    assert out.ref == AttemptRef(run_id="run1", node_id="add", attempt=1)
    assert (out.started_at, out.finished_at) == (1001.0, 1002.0)
    assert executor.running() == []


async def test_params_are_parsed_as_in_a_taskiq_worker(executor: TaskExecutor) -> None:
    out = await executor.run(assignment("add", "2", "40"))
    assert out.return_value == 42


async def test_sync_task_runs_in_a_thread(executor: TaskExecutor) -> None:
    out = await executor.run(assignment("sync_add", 4, b=5))
    assert out.status == "succeeded"
    assert isinstance(out.return_value, dict)
    assert out.return_value["sum"] == 9
    assert out.return_value["off_main"] is True
    assert str(out.return_value["thread"]).startswith("fleet-task")  # our pool, not the loop's


async def test_pydantic_return_value_is_dumped(executor: TaskExecutor) -> None:
    out = await executor.run(assignment("point"))
    assert out.return_value == {"x": 1, "y": 2}


@pytest.mark.parametrize("task", ["opaque", "nan", "deep"])
async def test_unserializable_result_fails(executor: TaskExecutor, task: str) -> None:
    out = await executor.run(assignment(task))
    assert out.status == "failed"
    assert out.return_value is None
    assert out.error is not None
    assert out.error.type == "UnserializableResult"
    assert out.error.message
    if task == "deep":
        assert "nested more than 64 levels" in out.error.message


async def test_exception_becomes_failed_outcome(executor: TaskExecutor, recorder: Recorder) -> None:
    out = await executor.run(assignment("boom"))
    assert out.status == "failed"
    assert out.return_value is None
    assert out.error is not None
    assert out.error.type == "ValueError"
    assert out.error.message == "bad input 7"
    assert "Traceback" in out.error.traceback
    assert 'raise ValueError("bad input 7")' in out.error.traceback
    assert ("on_error", "ValueError") in recorder.calls


async def test_timeout_reports_timed_out(executor: TaskExecutor, probe: Probe) -> None:
    out = await executor.run(assignment("hang", timeout=0.05))
    assert probe.started.is_set()
    assert out.status == "timed_out"
    assert out.error is not None
    assert out.error.type == "TimeoutError"
    assert "0.05" in out.error.message
    assert executor.running() == []


async def test_assignment_timeout_replaces_taskiq_timeout_label(executor: TaskExecutor) -> None:
    out = await executor.run(assignment("labels", timeout=5, labels={"timeout": 5, "k": "v"}))
    assert isinstance(out.return_value, dict)
    assert "timeout" not in out.return_value
    assert out.return_value["k"] == "v"


async def test_sync_task_timeout_discards_late_result(executor: TaskExecutor, probe: Probe) -> None:
    out = await executor.run(assignment("sync_hang", timeout=0.05))
    assert out.status == "timed_out"
    assert not probe.thread_done.is_set()  # the thread is still running
    probe.release.set()
    assert await asyncio.to_thread(probe.thread_done.wait, 5)


async def test_cancel_stops_running_attempt(executor: TaskExecutor, probe: Probe) -> None:
    a = assignment("hang")
    running = asyncio.create_task(executor.run(a))
    await probe.started.wait()
    assert executor.running() == [a.ref]
    assert executor.cancel(a.ref, "user asked")
    out = await running
    assert out.status == "cancelled"
    assert out.error is not None
    assert out.error.type.endswith("AttemptCancelled")
    assert out.error.message == "user asked"
    assert executor.running() == []
    assert not executor.cancel(a.ref)


async def test_cancelling_the_caller_propagates(executor: TaskExecutor, probe: Probe) -> None:
    running = asyncio.create_task(executor.run(assignment("hang")))
    await probe.started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert executor.running() == []


async def test_cancel_unknown_attempt_is_false(executor: TaskExecutor) -> None:
    assert not executor.cancel(AttemptRef(run_id="r", node_id="n", attempt=1))


async def test_unknown_task_raises(executor: TaskExecutor, recorder: Recorder) -> None:
    assert not executor.has_task("nope")
    assert executor.has_task("add")
    with pytest.raises(UnknownTask, match="nope"):
        await executor.run(assignment("nope"))
    assert recorder.calls == []


async def test_middlewares_and_result_backend(
    executor: TaskExecutor,
    recorder: Recorder,
    broker_and_recorder: tuple[InMemoryBroker, Recorder],
) -> None:
    a = assignment("add", 1, 1)
    await executor.run(a)
    assert recorder.calls == [("pre_execute", a.ref.key), ("post_execute", a.ref.key)]
    stored = await broker_and_recorder[0].result_backend.get_result(a.ref.key)
    assert stored.return_value == 2
    assert not stored.is_err


async def test_dependency_injection(executor: TaskExecutor) -> None:
    out = await executor.run(assignment("scaled", 7))
    assert out.return_value == 70


async def test_fleet_labels_reach_context(executor: TaskExecutor) -> None:
    out = await executor.run(assignment("labels", attempt=3, gpus=(0, 2), labels={"team": "ml"}))
    assert isinstance(out.return_value, dict)
    assert out.return_value["team"] == "ml"
    assert out.return_value["fleet_attempt"] == 3
    assert out.return_value["fleet_gpu_devices"] == "0,2"
    assert out.return_value["fleet_worker"] == WORKER


@pytest.mark.parametrize("task", ["whoami", "sync_whoami"])
async def test_attempt_and_gpus_visible_in_task(executor: TaskExecutor, task: str) -> None:
    out = await executor.run(assignment(task, attempt=2, gpus=(1, 3)))
    assert isinstance(out.return_value, dict)
    assert out.return_value["attempt"] == 2
    assert out.return_value["gpus"] == [1, 3]
    if task == "sync_whoami":
        assert out.return_value["off_main"] is True
    assert current_attempt() is None
    assert current_gpu_devices() == ()


async def test_concurrent_attempts_see_their_own_values(executor: TaskExecutor) -> None:
    outs: list[Outcome] = await asyncio.gather(
        *(executor.run(assignment("sync_whoami", attempt=n, gpus=(n,))) for n in range(1, 6))
    )
    assert [o.return_value for o in outs] == [
        {"attempt": n, "gpus": [n], "off_main": True} for n in range(1, 6)
    ]


# -- the agent encodes a return value once, from the task's return to the published outcome --


class _Store:
    def __init__(self) -> None:
        self.put_calls: list[tuple[str, bytes]] = []

    async def save(self, data: bytes) -> PayloadRef:
        name = f"w.k{len(self.put_calls)}"
        self.put_calls.append((name, data))
        return PayloadRef(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())


class _JetStream:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish_async(self, subject: str, data: bytes, **_: Any) -> asyncio.Future[None]:
        self.published.append((subject, data))
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked


class _Nats:
    max_payload = 1 << 20

    def __init__(self) -> None:
        self.js = _JetStream()

    def jetstream(self) -> _JetStream:
        return self.js


def _spaced(value: Any) -> bytes:
    """An encoding unlike pydantic's compact one: if the outcome re-encoded the value,
    the published bytes would not contain it."""
    return json.dumps(value, separators=(", ", ": "), allow_nan=False).encode()


@pytest.mark.parametrize("size", [3, 5000])
async def test_agent_encodes_a_return_value_once(
    monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """Small values travel inline, large ones by reference; either way the value becomes
    JSON bytes once (the counted encoder) and those very bytes are what is sent."""
    calls: list[Any] = []

    def counting(value: Any) -> bytes:
        calls.append(value)
        return _spaced(value)

    monkeypatch.setattr(wire_codec, "encode_value", counting)
    broker = InMemoryBroker()

    @broker.task(task_name="values")
    def values(n: int) -> list[int]:
        return list(range(n))

    agent = Agent(broker, WorkerSpec(name=WORKER, cpu=1), AgentSettings(inline_limit=1000))
    nats, store = _Nats(), _Store()
    agent._nc = nats  # type: ignore[assignment]
    agent._js = nats.js  # type: ignore[assignment]
    agent._store = store  # type: ignore[assignment]
    try:
        outcome = await agent._executor.run(assignment("values", size))
        await agent._store_outcomes([await agent._externalise(outcome)])
    finally:
        agent._executor.close()

    encoded = _spaced(list(range(size)))
    assert len(calls) == 1
    ((subject, data),) = nats.js.published
    sent = decode_each(data, Outcome)[0]
    assert subject == agent._subjects.outcome(WORKER, "run1", "values")
    if size == 3:
        assert store.put_calls == []
        assert encoded in data
        assert sent.return_value == list(range(size))
    else:
        assert store.put_calls == [(sent.return_ref.name if sent.return_ref else "", encoded)]
        assert sent.return_value is None
        assert sent.return_ref is not None
        assert sent.return_ref.size == len(encoded)
