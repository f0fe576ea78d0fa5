"""The agent's logs never carry a task's arguments: a task that fails, one that is
cancelled and one whose argument does not parse, each given a secret-looking keyword
argument, run through the executor while both the stdlib records (caplog) and the
agent's structlog output (JSON lines and console) are captured; the secret appears in
neither. A cancellation is one INFO line, an exception its type and message, and no
traceback is logged.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from taskiq import InMemoryBroker

from shared.logging import LogFormat, configure_logging
from shared.resources import ResourceRequest
from shared.wire.protocol import Assignment, AttemptRef
from worker_agent.executor import LOG_TEXT_LIMIT, TaskExecutor, safe_error

SECRET = "pw-4f1c9e7b0d2a-hunter2"
"""Never written in this file's task code, so only an argument value can carry it."""

pytestmark = pytest.mark.usefixtures("restore_logging")


class Tasks:
    """Tasks taking a ``password``, on their own broker."""

    def __init__(self) -> None:
        self.broker = InMemoryBroker()
        self.started = asyncio.Event()

        @self.broker.task("log_in")
        async def log_in(user: str, password: str) -> None:
            raise PermissionError(f"user {user} may not log in")

        @self.broker.task("log_in_slowly")
        async def log_in_slowly(user: str, password: str) -> None:
            self.started.set()
            await asyncio.Event().wait()

        @self.broker.task("pin")
        async def pin(code: int) -> int:
            return code


def assignment(task: str, **kwargs: Any) -> Assignment:
    return Assignment(
        ref=AttemptRef(run_id="run1", node_id=task.replace("_", "-"), attempt=1),
        task_name=task,
        kwargs=kwargs,
        request=ResourceRequest(),
    )


@pytest.fixture
def tasks() -> Tasks:
    return Tasks()


@pytest.fixture
async def executor(tasks: Tasks) -> AsyncIterator[TaskExecutor]:
    ex = TaskExecutor(tasks.broker, worker="host-a")
    yield ex
    ex.close()


@pytest.fixture(params=["json", "console"])
def agent_log(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> io.StringIO:
    """The agent's own log stream, as ``fleet agent --log-level debug`` sets it up."""
    fmt: LogFormat = request.param
    stream = io.StringIO()
    configure_logging("debug", fmt, stream=stream)
    caplog.set_level(logging.DEBUG)
    return stream


def assert_no_secret(caplog: pytest.LogCaptureFixture, stream: io.StringIO) -> None:
    records = [r for r in caplog.records if r.name.startswith("taskiq")]
    assert records, "taskiq logged nothing: the test does not see its logs"
    for record in caplog.records:
        assert SECRET not in record.getMessage(), record.getMessage()
        assert record.exc_info is None, record.getMessage()
    assert SECRET not in caplog.text
    assert SECRET not in stream.getvalue()
    assert "Traceback" not in caplog.text + stream.getvalue()


async def test_a_failing_task_logs_its_error_not_its_arguments(
    executor: TaskExecutor, caplog: pytest.LogCaptureFixture, agent_log: io.StringIO
) -> None:
    outcome = await executor.run(assignment("log_in", user="ada", password=SECRET))
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert "Traceback" in outcome.error.traceback  # the coordinator still gets the whole error
    assert_no_secret(caplog, agent_log)
    (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "PermissionError: user ada may not log in" in error.getMessage()


async def test_a_cancelled_attempt_logs_one_info_line(
    executor: TaskExecutor,
    tasks: Tasks,
    caplog: pytest.LogCaptureFixture,
    agent_log: io.StringIO,
) -> None:
    a = assignment("log_in_slowly", user="ada", password=SECRET)
    running = asyncio.create_task(executor.run(a))
    await tasks.started.wait()
    assert executor.cancel(a.ref, "user asked")
    assert (await running).status == "cancelled"
    assert_no_secret(caplog, agent_log)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any(
        r.name.startswith("taskiq") and r.levelno == logging.INFO and "cancelled" in r.getMessage()
        for r in caplog.records
    )


async def test_an_argument_that_does_not_parse_is_not_quoted(
    executor: TaskExecutor, caplog: pytest.LogCaptureFixture, agent_log: io.StringIO
) -> None:
    await executor.run(assignment("pin", code=SECRET))
    assert_no_secret(caplog, agent_log)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "Can't parse argument code" in warning.getMessage()
    assert "Input should be a valid integer" in warning.getMessage()


def test_an_error_is_clipped() -> None:
    text = safe_error(ValueError("x" * 10_000))
    assert text.startswith("ValueError: xxx")
    assert len(text) == LOG_TEXT_LIMIT
