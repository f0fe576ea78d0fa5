"""What a taskiq user does out of habit: ``taskiq worker app:broker``, and configuring the
broker through the same ``FLEET_*`` variables as the ``fleet`` commands."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskiq_fleet import CoordinatorClient, FleetBroker
from tests.e2e import env_app
from tests.e2e.test_examples import run_example
from tests.natsserver import NatsServer
from tests.processes import ROOT, agent, coordinator

APP = "tests.e2e.env_app:broker"
WAIT = 20.0
REFUSAL = "FleetBroker tasks run on fleet agents: start `fleet agent module:broker` instead"


def test_taskiq_worker_stops_at_once_with_one_line() -> None:
    """taskiq's own CLI, as a user would start it (two worker processes by default)."""
    command = [sys.executable, "-m", "taskiq", "worker", APP]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out, _ = proc.communicate(timeout=60)  # a hang guard: it ends within a second or so
    except subprocess.TimeoutExpired:
        proc.terminate()  # taskiq's manager stops its children on SIGTERM
        out, _ = proc.communicate(timeout=30)
        pytest.fail(f"`taskiq worker` still running after 60 s:\n{out[-3000:]}")
    assert out.count(REFUSAL) == 1, out
    assert "Traceback" not in out
    assert "coroutine" not in out


def test_taskiq_worker_is_asked_to_stop_once_and_loses_no_child_before() -> None:
    """taskiq's manager hangs for good when a SIGTERM, or a child's death it notices,
    comes while its handler of an earlier SIGTERM runs (a non-reentrant queue lock); it
    hung so in CI. Six children make the race likely; what must hold is what rules it
    out: one request to stop, and no child dead before the manager stops them."""
    command = [sys.executable, "-m", "taskiq", "worker", APP, "--workers", "6"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    out = proc.stdout + proc.stderr
    assert out.count("Workers are scheduled for shutdown.") == 1, out
    assert "is dead" not in out, out
    assert out.count("Stopped process worker-") == 6, out
    assert out.count(REFUSAL) == 1, out


@pytest.fixture
def blue_fleet(nats_url: str, tmp_path: Path) -> Iterator[None]:
    """A coordinator and an agent on the subject prefix ``blue``."""
    with (
        coordinator(nats_url, tmp_path, "--prefix", "blue"),
        agent(nats_url, "w", tmp_path, "--prefix", "blue", app=APP),
    ):
        yield


async def test_broker_and_client_read_the_fleet_from_the_environment(
    blue_fleet: None, nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_NATS", nats_url)
    monkeypatch.setenv("FLEET_PREFIX", "blue")
    async with await CoordinatorClient.connect() as client:
        assert [w.spec.name for w in await client.wait_ready(1, within=WAIT)] == ["w"]
    await env_app.broker.startup()
    try:
        result = await (await env_app.add.kiq(2, 3)).wait_result(timeout=WAIT)
        assert result.return_value == 5
    finally:
        await env_app.broker.shutdown()


@pytest.fixture
def guarded_url(tmp_path: Path) -> Iterator[str]:
    """A nats-server that lets in only user alice."""
    config = tmp_path / "nats.conf"
    config.write_text('authorization { user: "alice", password: "wonder land" }\n')
    server = NatsServer(tmp_path, extra_args=("-c", str(config))).start()
    try:
        yield server.url
    finally:
        server.stop()


async def test_credentials_come_from_the_environment_when_a_url_is_given(
    guarded_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_NATS", "nats://127.0.0.1:1")  # the URL given wins over it
    monkeypatch.setenv("FLEET_NATS_USER", "alice")
    monkeypatch.setenv("FLEET_NATS_PASSWORD", "wonder land")
    async with await CoordinatorClient.connect(guarded_url) as client:
        assert client.nc.is_connected
    broker = FleetBroker(guarded_url)
    await broker.startup()
    try:
        assert broker.client is not None
        assert isinstance(broker.client, CoordinatorClient)
        assert broker.client.nc.is_connected
    finally:
        await broker.shutdown()


def test_the_example_runs() -> None:
    out = run_example("configured_by_env")
    assert "CoordinatorClient.connect() sees the workers ['cpu']" in out
    assert "add_one.kiq(41) through FleetBroker() -> 42" in out
