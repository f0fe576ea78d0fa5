"""The ``dashboard`` user of deploy/nats/accounts.conf: it sees the fleet and cannot act on it.

On a real nats-server with accounts.conf, a coordinator and an agent logged in as their
roles: ``fleet dashboard`` logged in as ``dashboard`` shows the worker and a run a client
submitted, with no permission violation; a connection with the dashboard's credentials is
refused every publish that would submit, assign, cancel, change a limit, speak for an
agent or touch JetStream, and every subscription beyond what it reads.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest

from taskiq_fleet import CoordinatorClient, FleetError
from tests.integration import test_deploy_nats as deploy
from tests.natsserver import NatsServer, free_port
from tests.processes import FleetProcess

pytestmark = pytest.mark.integration

passwords = deploy.passwords
fleet = deploy.fleet
server = deploy.server

FORBIDDEN_PUBLISH = (
    "fleet.submit",
    "fleet.worker.a1.assign",
    "fleet.worker.a1.cancel",
    "fleet.ctl.cancel",
    "fleet.ctl.limit",
    "fleet.agent.heartbeat.a1",
    "fleet.outcome.a1.some-run.some-node",
    "fleet.run.some-run",
    "fleet.payload.dashboard.key.0",
    "$JS.API.STREAM.CREATE.FLEET_SUBMISSIONS",
    "$KV.FLEET_RUNS.live.some-run",
)
FORBIDDEN_SUBSCRIBE = ("fleet.worker.a1.>", "fleet.>", "_INBOX.>", "fleet.outcome.>")


def api(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        found: dict[str, Any] = json.load(response)
    return found


async def until(port: int, path: str, check: Any, proc: FleetProcess) -> dict[str, Any]:
    """Until the dashboard's answer passes ``check``: it announces nothing, so this asks
    every 50 ms."""
    async with asyncio.timeout(deploy.TIMEOUT):
        while True:
            assert proc.proc is not None
            assert proc.proc.poll() is None, proc.log()
            try:
                found = await asyncio.to_thread(api, port, path)
            except OSError:
                found = {}
            if found and check(found):
                return found
            await asyncio.sleep(0.05)


async def test_the_dashboard_user_shows_the_fleet_without_a_violation(
    fleet: deploy.Fleet, server: NatsServer
) -> None:
    fleet.coordinator(server.url)
    fleet.agent(server.url, "a1")
    port = free_port()
    args = ["dashboard", "--nats", server.url, *fleet.login("dashboard"), "--port", str(port)]
    dashboard = FleetProcess(args, fleet.dir / "dashboard.log").start()
    fleet.processes.append(dashboard)
    async with await fleet.client(server.url) as client:
        await deploy.ready(client, 1, fleet)
        await until(
            port, "/api/fleet", lambda f: [w["name"] for w in f["workers"]] == ["a1"], dashboard
        )
        run = await client.submit(deploy.adding_dag(), {"text": "a", "n": 1})
        assert (await run.wait(timeout=deploy.TIMEOUT)).status == "succeeded"
    found = await until(port, f"/api/runs?q={run.run_id}", lambda f: f["runs"], dashboard)
    assert found["runs"][0]["status"] == "succeeded"
    detail = await asyncio.to_thread(api, port, f"/api/runs/{run.run_id}")
    assert detail["run"]["edges"] == [["shout", "louder"]]
    fleet.close()
    assert fleet.violations() == []


async def test_the_dashboard_credentials_read_but_cannot_publish_work(
    fleet: deploy.Fleet, server: NatsServer
) -> None:
    fleet.coordinator(server.url)
    fleet.agent(server.url, "a1")
    settings = fleet.settings(server.url, "dashboard")
    async with await CoordinatorClient.connect(settings) as reader:
        assert [w.spec.name for w in await deploy.ready(reader, 1, fleet)] == ["a1"]
        assert await reader.runs() == []
        with pytest.raises(FleetError, match="no answer from the coordinator to 'cancel'"):
            await reader.cancel("some-run")

    errors: list[str] = []
    all_reported = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())
        if len(errors) >= len(FORBIDDEN_PUBLISH) + len(FORBIDDEN_SUBSCRIBE):
            all_reported.set()

    rogue = await deploy.as_role(settings, name="rogue", error_cb=on_error)
    try:
        for subject in FORBIDDEN_PUBLISH:
            await rogue.publish(subject, b'{"type":"submit","version":1}')
        for subject in FORBIDDEN_SUBSCRIBE:
            await rogue.subscribe(subject)
        await rogue.flush(timeout=deploy.TIMEOUT)
        try:
            await asyncio.wait_for(all_reported.wait(), deploy.REFUSAL_WITHIN)
        except TimeoutError:
            pytest.fail(f"the server refused only these: {errors}")
        reported = "\n".join(errors)
        for subject in FORBIDDEN_PUBLISH:
            assert f'permissions violation for publish to "{subject.lower()}"' in reported
        for subject in FORBIDDEN_SUBSCRIBE:
            assert f'permissions violation for subscription to "{subject.lower()}"' in reported
    finally:
        await rogue.close()
    async with await fleet.client(server.url) as client:
        run = await client.submit(deploy.adding_dag(), {"text": "b", "n": 2})
        assert (await run.wait(timeout=deploy.TIMEOUT)).status == "succeeded"
