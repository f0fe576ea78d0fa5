"""A task's exception reaches the caller with its type (in process; the NATS fleet is
``tests/e2e/test_remote_errors.py``): an instance of the task's class when this process
has it, still a ``TaskFailed`` / ``RunFailed`` / ``PipelineError``, never unpickled."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.wire.protocol import ErrorInfo
from shared.wire.runs import RunView
from taskiq_fleet import (
    Dag,
    DataflowPipeline,
    LocalFleetBroker,
    Node,
    Pipeline,
    PipelineError,
    RunFailed,
    Task,
    TaskFailed,
)
from tests.unit import error_tasks
from tests.unit.error_tasks import Picky, QuotaExceeded

WAIT = 10.0
BAD_INT = "invalid literal for int() with base 10: 'x'"


@pytest.fixture
async def broker() -> AsyncIterator[LocalFleetBroker]:
    broker = LocalFleetBroker([{"name": "w", "cpu": 2, "ram_mb": 2048}])
    error_tasks.register(broker)
    await broker.startup()
    yield broker
    await broker.shutdown()


async def failure(broker: LocalFleetBroker, name: str, *args: Any) -> BaseException:
    task = broker.find_task(name)
    assert task is not None
    result = await (await task.kiq(*args)).wait_result(timeout=WAIT)
    assert result.is_err
    assert result.error is not None
    return result.error


def remote_cause(error: BaseException) -> TaskFailed:
    cause = error.__cause__
    assert isinstance(cause, TaskFailed)
    return cause


async def test_a_builtin_error_keeps_its_type(broker: LocalFleetBroker) -> None:
    error = await failure(broker, "parse", "x")
    assert isinstance(error, ValueError)
    assert isinstance(error, TaskFailed)  # what callers caught before still catches it
    assert str(error) == BAD_INT
    assert "return int(text)" in error.remote_traceback
    assert error.__notes__[0].startswith("Remote traceback:\nTraceback (most recent call last)")


async def test_a_class_of_the_task_module_with_several_arguments(broker: LocalFleetBroker) -> None:
    task = broker.find_task("charge")
    assert task is not None
    result = await (await task.kiq("bob")).wait_result(timeout=WAIT)
    with pytest.raises(QuotaExceeded) as caught:
        result.raise_for_error()
    assert isinstance(caught.value, TaskFailed)
    assert str(caught.value) == "bob used 12 of 10"  # the remote str(), no __init__ rerun


async def test_a_class_whose_constructor_wants_other_arguments(broker: LocalFleetBroker) -> None:
    error = await failure(broker, "picky")
    assert isinstance(error, Picky)  # neither its __new__ nor its __init__ is run
    assert isinstance(error, TaskFailed)
    assert str(error) == "3: no"


async def test_a_class_no_path_names_gives_task_failed(broker: LocalFleetBroker) -> None:
    error = await failure(broker, "hidden")
    assert type(error) is TaskFailed
    where = "tests.unit.error_tasks.register.<locals>.hidden.<locals>.Hidden"
    assert str(error) == f"{where}: nobody can name me"
    assert "Traceback (most recent call last)" in error.remote_traceback


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "Gone", "module": "no_such_module_here", "qualname": "Gone"},
        {"type": "system", "message": "echo owned", "module": "os", "qualname": "system"},
        {"type": "dict", "module": "builtins", "qualname": "dict"},
        {"type": "KeyboardInterrupt", "module": "builtins", "qualname": "KeyboardInterrupt"},
        {"type": "Error", "module": "antigravity", "qualname": "Error"},  # never imported
        {"type": "Rejected", "message": "no room"},  # the coordinator's own errors
        {"type": "ValueError", "message": "m"},  # from an agent older than the class path
    ],
    ids=["not-loaded", "not-a-class", "not-an-exception", "base", "unimported", "own", "old"],
)
def test_only_a_loaded_exception_class_is_rebuilt(fields: dict[str, str]) -> None:
    from taskiq_fleet.remote_errors import task_error  # here: the base commit has none

    info = ErrorInfo.model_validate(fields)
    error = task_error(info)
    assert type(error) is TaskFailed
    assert str(error) == (f"{info.type}: {info.message}" if info.message else info.type)
    assert "antigravity" not in sys.modules  # a class path is looked up, never imported


async def test_a_run_handle_raises_the_task_class(broker: LocalFleetBroker) -> None:
    node = Node(id="p", task="parse", kwargs={"text": "x"})
    handle = await broker.fleet.submit(Dag(nodes=(node,)))
    with pytest.raises(ValueError, match=r"^run ") as caught:
        await handle.result(WAIT)
    assert isinstance(caught.value, RunFailed)
    assert caught.value.view.node("p").status == "failed"
    assert str(remote_cause(caught.value)) == BAD_INT


async def test_a_pipeline_gives_the_task_class(broker: LocalFleetBroker) -> None:
    parse = broker.find_task("parse")
    task = await Pipeline(broker).call_next(parse).kiq("x")
    result = await task.wait_result(timeout=WAIT)
    assert isinstance(result.error, ValueError)
    assert isinstance(result.error, PipelineError)  # the documents' except PipelineError
    with pytest.raises(ValueError, match=r"^pipeline "):
        result.raise_for_error()
    with pytest.raises(ValueError, match=r"^pipeline ") as caught:
        await task.wait_result(timeout=WAIT, raise_on_error=True)
    assert "return int(text)" in remote_cause(caught.value).remote_traceback
    with pytest.raises(ValueError, match=r"^pipeline "):
        await Task(task.task_id, broker).wait_result(timeout=WAIT, raise_on_error=True)


async def test_a_dataflow_raises_the_task_class(broker: LocalFleetBroker) -> None:
    charge = broker.find_task("charge")
    with pytest.raises(QuotaExceeded) as caught:
        await DataflowPipeline.from_tasks(broker, [charge]).kiq_dataflow(user="ann")
    assert isinstance(caught.value, PipelineError)
    assert caught.value.partial_results == {}
    assert str(remote_cause(caught.value)) == "ann used 12 of 10"


async def test_a_class_no_path_names_fails_the_pipeline_plainly(
    broker: LocalFleetBroker,
) -> None:
    hidden = broker.find_task("hidden")
    task = await Pipeline(broker).call_next(hidden).kiq()
    result = await task.wait_result(timeout=WAIT)
    assert type(result.error) is PipelineError
    assert type(remote_cause(result.error)) is TaskFailed


def test_classes_that_cannot_be_combined_give_the_plain_error() -> None:
    from taskiq_fleet import PipelineTimeoutError
    from taskiq_fleet.remote_errors import rebuilt

    view = RunView(run_id="r", status="failed", error="run timed out")
    info = ErrorInfo(type="UnicodeDecodeError", module="builtins", qualname="UnicodeDecodeError")
    error = rebuilt(PipelineTimeoutError, info, view, {})  # their layouts clash
    assert type(error) is PipelineTimeoutError
    assert isinstance(remote_cause(error), UnicodeDecodeError)
