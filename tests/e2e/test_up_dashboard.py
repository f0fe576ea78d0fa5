"""``fleet up`` starts a dashboard beside the fleet and prints where it is."""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from taskiq_fleet.local_cluster import LocalCluster
from tests.e2e.test_up import start_up, stop_safely

pytestmark = pytest.mark.integration


def fleet_json(page: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{page}api/fleet", timeout=5) as response:
        found: dict[str, Any] = json.load(response)
    return found


async def test_fleet_up_prints_a_dashboard_that_shows_its_agents(tmp_path: Path) -> None:
    paths = {"tmp": tmp_path / "tmp", "cwd": tmp_path / "cwd"}
    for path in paths.values():
        path.mkdir()
    up = start_up(paths, "--agents", "2", "--state-dir", str(tmp_path / "state"))
    try:
        page = up.until(r"^dashboard\s+(http://127\.0\.0\.1:\d+/) \(pid \d+\)$")[1]
        up.until(r"^fleet up: ready in ")
        async with asyncio.timeout(30):  # the page announces nothing: asked every 50 ms
            while len((await asyncio.to_thread(fleet_json, page))["workers"]) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        up.proc.send_signal(signal.SIGTERM)
        output = up.rest()
        assert up.proc.returncode == 0, output
    finally:
        stop_safely(up)


class _SlowDashboard(LocalCluster):
    """A dashboard that takes a second longer to start than the rest of the fleet."""

    def dashboard_command(self, nats_url: str, port: int) -> list[str]:
        command = shlex.join(super().dashboard_command(nats_url, port))
        return ["sh", "-c", f"sleep 1; exec {command}"]


async def test_a_started_cluster_s_dashboard_answers_at_once(tmp_path: Path) -> None:
    """``fleet up`` says ready, and prints the dashboard's address, once the page answers:
    it is a process of its own, and a page opened at "ready" was refused while it started."""
    cluster = _SlowDashboard(1, dashboard=True, port=0, state_dir=tmp_path / "state", heartbeat=0.2)
    async with cluster:
        assert cluster.dashboard_url is not None
        found = await asyncio.to_thread(fleet_json, cluster.dashboard_url)
        assert "workers" in found
