"""Agents offer custom resources (``fleet agent --resources licenses=2``): work that asks for
them runs only where they are offered, never more of it at once than offered, and a
request no agent could ever hold fails as infeasible with the reason."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from taskiq_fleet import Dag, Node, ResourceRequest
from tests.e2e.cluster import Cluster
from tests.processes import ROOT, TASKS_APP

LICENSED = ResourceRequest(cpu=0.5, resources={"licenses": 1})


async def test_licensed_tasks_run_only_where_licenses_are_offered_and_two_at_a_time(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_coordinator()
    cluster.start_agent("lic", "--cpus", "8", "--ram-mb", "4096", "--resources", "licenses=2")
    cluster.start_agent("plain", "--cpus", "8", "--ram-mb", "4096")
    client = await cluster.connect(workers=2)
    specs = {w.spec.name: w.spec for w in await client.workers()}
    assert (specs["lic"].resources, specs["plain"].resources) == ({"licenses": 2}, {})

    gate = tmp_path / "gate"
    nodes = tuple(
        Node(id=f"n{i}", task="async_wait_for_gate", kwargs={"gate": str(gate)}, request=LICENSED)
        for i in range(5)
    )
    handle = await client.submit(Dag(nodes=nodes))
    full = await cluster.heartbeat(
        lambda b: b.worker == "lic" and b.reserved.resources.get("licenses") == 2
    )
    assert len(full.running) >= 2  # the others may be queued there behind them (leases)
    (lic,) = [w for w in await client.workers() if w.spec.name == "lic"]
    assert (lic.reserved["licenses"], lic.free["licenses"]) == (2, 0)
    view = await client.status(handle.run_id)
    assert view is not None
    statuses = [n.status for n in view.nodes]
    assert statuses.count("running") == 2, view.nodes
    assert set(statuses) <= {"running", "placed", "ready"}, view.nodes

    gate.touch()
    view = await handle.wait(timeout=60)
    assert view.status == "succeeded", view.error
    assert {n.worker for n in view.nodes} == {"lic"}
    beats = cluster.heartbeats
    assert all(b.reserved.resources.get("licenses", 0) <= 2 for b in beats)
    assert not any(b.running for b in beats if b.worker == "plain")
    assert "assignment rejected" not in cluster.logs()

    too_many = ResourceRequest(resources={"licenses": 3})
    dag = Dag(nodes=(Node(id="three", task="add", kwargs={"a": 1, "b": 2}, request=too_many),))
    failed = await (await client.submit(dag)).wait(timeout=30)
    assert failed.status == "failed"
    assert failed.error is not None
    assert "infeasible" in failed.error
    assert "licenses needs 3, has 2" in failed.error, failed.error


BAD = [
    ("licenses=-1", "licenses amount '-1' must be a non-negative number"),
    ("=3", "'=3' has no name"),
    ("fpga", "'fpga' is not name=amount"),
    ("licenses=two", "licenses amount 'two' is not a number"),
    ("cpu=2", "'cpu' is built in; state it with --cpus"),
    ("ram=512", "'ram' is built in; state it with --ram-mb"),
    ("gpu=1", "'gpu' is built in; state it with --gpus"),
]


@pytest.mark.parametrize(
    ("spec", "why", "via"), [(*case, "flag") for case in BAD] + [(*BAD[0], "env")]
)
def test_bad_resources_exit_2_with_one_line(spec: str, why: str, via: str) -> None:
    """From the flag or from FLEET_AGENT_RESOURCES, before connecting to anything."""
    args = ["--resources", spec] if via == "flag" else []
    env = {**os.environ, "FLEET_AGENT_RESOURCES": spec} if via == "env" else None
    result = subprocess.run(
        [sys.executable, "-m", "taskiq_fleet.cli", "agent", TASKS_APP, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"fleet agent: error: invalid --resources {spec!r}: {why}; "
        "expected e.g. 'licenses=4,fpga=1'\n"
    )


def test_the_example_runs_licensed_work_only_where_licenses_are() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.custom_resources"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "  -> [0, 1, 4, 9, 16, 25]\n  ran on ['licensed']\n" in out
    peak = re.search(r"at most (\d+) at a time", out)
    assert peak is not None, out
    assert 1 <= int(peak[1]) <= 2
    assert "is_err=True: Infeasible: " in out
    assert "licensed (resources: licenses needs 3, has 2)" in out
