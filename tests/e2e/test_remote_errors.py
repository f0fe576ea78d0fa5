"""A task's exception keeps its type across the NATS fleet: agents are separate
processes, the error crosses the wire as a class path, message and traceback."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskiq_fleet import Dag, Node, Pipeline, PipelineError, RunFailed, TaskFailed
from tests.e2e import error_app
from tests.e2e.cluster import Cluster, broker_cluster

APP = "tests.e2e.error_app:broker"
WAIT = 20.0


@pytest.fixture
async def cluster(nats_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    agents = {"w": ["--cpus", "2", "--ram-mb", "2048"]}
    async with broker_cluster(nats_url, tmp_path, error_app.broker, APP, agents) as c:
        yield c


async def test_errors_keep_their_class(cluster: Cluster) -> None:
    bad = await (await error_app.parse.kiq("x")).wait_result(timeout=WAIT)
    assert isinstance(bad.error, ValueError)
    assert isinstance(bad.error, TaskFailed)
    assert str(bad.error) == "invalid literal for int() with base 10: 'x'"
    assert "return int(text)" in bad.error.remote_traceback
    over = await (await error_app.charge.kiq("bob")).wait_result(timeout=WAIT)
    with pytest.raises(error_app.QuotaExceeded, match=r"^bob used 12 of 10"):
        over.raise_for_error()


async def test_a_class_the_client_lacks_is_task_failed(cluster: Cluster) -> None:
    assert "tests.e2e.error_hidden" not in sys.modules  # the agent imports it, not us
    result = await (await error_app.hidden.kiq()).wait_result(timeout=WAIT)
    assert type(result.error) is TaskFailed
    assert str(result.error) == (
        "tests.e2e.error_hidden.HiddenError: only the agent has this class"
    )


async def test_a_run_handle_raises_the_task_class(cluster: Cluster) -> None:
    assert cluster.client is not None
    node = Node(id="p", task="tests.e2e.error_app:parse", kwargs={"text": "x"})
    handle = await cluster.client.submit(Dag(nodes=(node,)))
    with pytest.raises(ValueError, match=r"^run ") as caught:
        await handle.result(WAIT)
    assert isinstance(caught.value, RunFailed)
    assert isinstance(caught.value.__cause__, TaskFailed)


async def test_a_pipeline_raises_the_task_class(cluster: Cluster) -> None:
    task = await Pipeline(error_app.broker).call_next(error_app.parse).kiq("x")
    with pytest.raises(ValueError, match=r"^pipeline ") as caught:
        await task.wait_result(timeout=WAIT, raise_on_error=True)
    assert isinstance(caught.value, PipelineError)
    assert isinstance(caught.value.__cause__, TaskFailed)
    assert "return int(text)" in caught.value.__cause__.remote_traceback
