"""The dashboard in a real headless Chromium, over a real fleet.

A nats-server, a coordinator, two agents and ``fleet dashboard`` run as separate
processes. A DAG holds both agents' cores behind a gate file while a third node waits
busy, and a GPU node's successor fails. The test opens each page and checks what a person
would see: the workers with their GPU device and labels, the run in the list, the busy
node with the pool's reason, the DAG with each node's state and worker, the failed node's
error; then it opens the gate and sees the run page change without a reload.
Screenshots of each page go to ``FLEET_SCREENSHOTS`` (a directory) when it is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from taskiq_fleet import Dag, Node, ResourceRequest
from tests.e2e.cluster import Cluster
from tests.natsserver import free_port
from tests.processes import FleetProcess

pytestmark = pytest.mark.browser
expect_module = pytest.importorskip("playwright.async_api", reason="playwright is in the dev extra")
expect = expect_module.expect
expect.set_options(timeout=30_000)
WITHIN = 30.0


@pytest.fixture
async def cluster(nats_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(nats_url, tmp_path)
    try:
        yield c
    finally:
        await c.close()


def fleet_json(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/fleet", timeout=5) as response:
        found: dict[str, Any] = json.load(response)
    return found


async def dashboard_knows(port: int, workers: int, proc: FleetProcess) -> None:
    """Until the dashboard answers with every worker: nothing announces that it listens,
    so this asks every 50 ms."""
    async with asyncio.timeout(WITHIN):
        while True:
            assert proc.proc is not None
            assert proc.proc.poll() is None, proc.log()
            try:
                if len((await asyncio.to_thread(fleet_json, port))["workers"]) >= workers:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)


def gated(node_id: str, gate: Path) -> Node:
    return Node(id=node_id, task="async_wait_for_gate", kwargs={"gate": str(gate)}, priority=5)


def shots() -> Path | None:
    where = os.environ.get("FLEET_SCREENSHOTS")
    if not where:
        return None
    path = Path(where)
    path.mkdir(parents=True, exist_ok=True)
    return path


async def shoot(page: Any, name: str) -> None:
    where = shots()
    if where is not None:
        await page.screenshot(path=str(where / f"{name}.png"), full_page=True)


async def test_a_person_sees_the_fleet_a_dag_its_failure_and_live_changes(
    cluster: Cluster, browser: Any, tmp_path: Path
) -> None:
    cluster.start_coordinator()
    cluster.start_agent("a1", "--cpus", "1", "--gpus", "1xL4:24576", "--labels", "zone=eu")
    cluster.start_agent("a2", "--cpus", "1", "--labels", "zone=us")
    port = free_port()
    args = ["dashboard", "--nats", cluster.url, "--port", str(port), "--log-format", "json"]
    dashboard = FleetProcess(args, tmp_path / "dashboard.log").start()
    try:
        client = await cluster.connect(workers=2)
        await dashboard_knows(port, 2, dashboard)
        gate = tmp_path / "gate"
        free = ResourceRequest(cpu=0)
        dag = Dag(
            nodes=(
                gated("hold_a", gate),
                gated("hold_b", gate),
                Node(id="later", task="add", kwargs={"a": 1, "b": 2}),
                Node(
                    id="embed",
                    task="describe",
                    kwargs={"text": "x"},
                    request=ResourceRequest(cpu=0, gpus=0.5),
                ),
                Node(
                    id="check",
                    task="fail",
                    kwargs={"message": "bad input 42"},
                    request=free,
                    after=("embed",),
                ),
                Node(id="report", task="add", kwargs={"a": 1, "b": 1}, after=("check", "later")),
            )
        )
        run = await client.submit(dag, name="nightly-embeddings", on_error="continue")
        page = await browser.new_page(viewport={"width": 1440, "height": 900})
        base = f"http://127.0.0.1:{port}"

        await page.goto(f"{base}/")
        workers = page.locator("#workers")
        for text in ("a1", "a2", "gpu 0 L4", "zone=eu", "zone=us", "healthy"):
            await expect(workers).to_contain_text(text)
        await expect(page.locator('tr[data-worker="a1"]')).to_contain_text("1/1 cores reserved")
        await shoot(page, "fleet")

        await page.goto(f"{base}/runs")
        row = page.locator(f'tr[data-run="{run.run_id}"]')
        await expect(row).to_contain_text("nightly-embeddings")
        await expect(row).to_contain_text("running")
        await page.select_option("#status", "succeeded")
        await expect(row).to_have_count(0)
        await page.select_option("#status", "")
        await page.fill("#search", run.run_id[:8])
        await expect(row).to_have_count(1)
        await shoot(page, "runs")

        await page.goto(f"{base}/waiting")
        waiting = page.locator('#waiting tr[data-node="later"]')
        await expect(waiting).to_contain_text("busy")
        await expect(waiting).to_contain_text("cpu")
        await shoot(page, "waiting")

        await page.goto(f"{base}/runs/{run.run_id}")
        node = page.locator("#dag .node")
        await expect(node).to_have_count(6)
        await expect(node.and_(page.locator('[data-node="check"]'))).to_have_attribute(
            "data-status", "failed"
        )
        await expect(page.locator("#failures")).to_contain_text("check: ValueError: bad input 42")
        await expect(page.locator("#node-panel")).to_contain_text("Traceback")
        embed = page.locator('#nodes tr[data-node="embed"]')
        await expect(embed).to_contain_text("a1")
        await expect(embed).to_contain_text("succeeded")
        hold = page.locator('#dag .node[data-node="hold_a"]')
        await expect(hold).to_have_attribute("data-status", "running")
        await expect(page.locator('#nodes tr[data-node="report"]')).to_contain_text("skipped")
        await shoot(page, "run")

        await page.evaluate("window.sameDocument = true")
        gate.touch()
        await expect(hold).to_have_attribute("data-status", "succeeded")
        await expect(page.locator("#run-status")).to_contain_text("failed")
        await expect(page.locator('#nodes tr[data-node="later"]')).to_contain_text("succeeded")
        assert await page.evaluate("window.sameDocument") is True, "the page was reloaded"
        await shoot(page, "run-ended")
    finally:
        dashboard.stop()
