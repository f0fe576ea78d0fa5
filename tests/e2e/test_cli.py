"""The client commands (``fleet workers/runs/status/cancel/submit``) as subprocesses against a
coordinator and an agent, each its own process, over a real nats-server."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.cli_support import CLI, cells, cli_fleet, run_cli
from tests.natsserver import free_port

DAGS = "tests.e2e.cli_dags"


@pytest.fixture
async def fleet(nats_url: str, tmp_path: Path) -> AsyncIterator[CLI]:
    async with cli_fleet(nats_url, tmp_path) as cli:
        yield cli


async def test_workers_lists_the_agent_with_its_capacity(fleet: CLI) -> None:
    shown = await fleet("workers")
    assert shown.returncode == 0, shown.stderr
    row = cells(shown.stdout, "w1")
    assert row[:6] == ["w1", "healthy", "0/3", "0/2048", "0:L4=1 1:L4=1", "0"]
    assert "zone=test" in row[6].split()
    assert row[7:9] == ["3", "2048"]
    assert row[9].endswith("s ago")
    as_json = json.loads((await fleet("workers", "--json")).stdout)
    assert [(w["spec"]["name"], w["spec"]["cpu"], w["free"]["cpu"]) for w in as_json] == [
        ("w1", 3.0, 3.0)
    ]


async def test_submit_then_status_runs_and_cancel_of_the_finished_run(fleet: CLI) -> None:
    done = await fleet("submit", f"{DAGS}:chain", "--input", "x=5", "--name", "twice")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.splitlines()[0].removeprefix("run ")
    assert re.fullmatch(r"[0-9a-f]{32}", run_id), done.stdout
    # A fast node may go from placed to succeeded within one coordinator step: no "running".
    progress = [line for line in done.stdout.splitlines() if line.startswith("  node ")]
    assert progress[0].startswith("  node first: ")
    for node_id in ("first", "second"):
        assert any(line.startswith(f"  node {node_id}: succeeded on w1 in ") for line in progress)
    assert f"run {run_id} succeeded" in done.stdout
    outputs = done.stdout.split("outputs:\n", 1)[1].split("\n\n", 1)[0]
    assert outputs.splitlines() == ["  x = 5", "  y = 6", "  z = 16"]
    assert cells(done.stdout, "first")[:2] == ["first", "w1"]
    assert cells(done.stdout, "second")[:2] == ["second", "w1"]

    status = await fleet("status", run_id)
    assert status.returncode == 0, status.stderr
    assert f"run {run_id} (twice)" in status.stdout
    assert "status:    succeeded" in status.stdout
    assert cells(status.stdout, "second")[:5] == ["second", "add", "succeeded", "w1", "1"]
    as_json = json.loads((await fleet("status", run_id, "--json")).stdout)
    assert (as_json["status"], as_json["outputs"]["z"]) == ("succeeded", 16)

    runs = await fleet("runs")
    assert runs.returncode == 0, runs.stderr
    assert cells(runs.stdout, run_id)[1:4] == ["twice", "succeeded", "2/2"]

    cancel = await fleet("cancel", run_id)
    assert cancel.returncode == 1
    assert f"cannot cancel: run {run_id!r} is succeeded" in cancel.stderr

    missing = await fleet("status", "no-such-run")
    assert missing.returncode == 1
    assert "no run 'no-such-run'" in missing.stderr


async def test_submit_json_a_running_run_listed_and_cancelled(fleet: CLI) -> None:
    done = await fleet("submit", f"{DAGS}:chain", "--input", "x=1", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["status"], result["outputs"]) == ("succeeded", {"x": 1, "y": 2, "z": 12})
    assert {n["id"]: n["worker"] for n in result["run"]["nodes"]} == {"first": "w1", "second": "w1"}

    queued = await fleet("submit", f"{DAGS}:sleeper", "--no-wait", "--json", "--name", "nap")
    assert queued.returncode == 0, queued.stderr
    run_id = json.loads(queued.stdout)["run_id"]
    runs = await fleet("runs")
    assert runs.returncode == 0, runs.stderr
    assert cells(runs.stdout, run_id)[1:4] == ["nap", "running", "0/1"]
    listed = json.loads((await fleet("runs", "--json")).stdout)
    assert run_id in [r["run_id"] for r in listed]
    cancel = await fleet("cancel", run_id)
    assert cancel.returncode == 0, cancel.stderr
    assert f"run {run_id} cancelled" in cancel.stdout
    status = json.loads((await fleet("status", run_id, "--json")).stdout)
    assert status["status"] == "cancelled"


async def test_a_failed_run_exits_1_with_its_error(fleet: CLI) -> None:
    failed = await fleet("submit", f"{DAGS}:failing")
    assert failed.returncode == 1
    assert "  node boom: failed on w1" in failed.stdout
    assert "ValueError: it broke" in failed.stdout
    assert "node boom failed (attempt 1 on w1): ValueError: it broke" in failed.stdout
    assert "Traceback (most recent call last):" in failed.stdout
    assert "run " in failed.stderr
    assert "failed" in failed.stderr


# -- errors before anything is sent: NATS is never contacted, so its URL can be unreachable ----


@pytest.mark.parametrize(
    ("args", "text"),
    [
        ([f"{DAGS}:chain"], "missing external input(s) ['x']"),
        ([f"{DAGS}:chain", "--input", "x=1", "--input", "q=2"], "unknown input(s) ['q']"),
        ([f"{DAGS}:chain", "--input", "x=[1,"], "--input x: not valid JSON"),
        ([f"{DAGS}:chain", "--input", "x"], "expected NAME=JSON"),
        ([f"{DAGS}:chain", "--input-file", "x=/no/such/file"], "cannot read /no/such/file"),
        ([f"{DAGS}:nothing"], "has no attribute 'nothing'"),
        ([f"{DAGS}:not_a_dag"], "is a int, not a shared.dag.Dag"),
        (["tests.e2e.no_such_module:dag"], "cannot import module 'tests.e2e.no_such_module'"),
        ([DAGS], "expected MODULE:ATTR"),
        ([f"{DAGS}:chain", "--max-parallel", "0"], "must be > 0"),
    ],
)
def test_bad_submissions_exit_2_with_one_clear_line(args: list[str], text: str) -> None:
    result = run_cli("submit", *args, "--nats", f"nats://127.0.0.1:{free_port()}")
    assert result.returncode == 2, result.stderr
    assert text in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_an_input_file_is_read_as_json(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("{")
    result = run_cli("submit", f"{DAGS}:chain", "--input-file", f"x={path}")
    assert result.returncode == 2
    assert "--input-file x: not valid JSON" in result.stderr


def test_an_input_file_that_is_not_utf8_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b"\xff\xfe")
    result = run_cli("submit", f"{DAGS}:chain", "--input-file", f"x={path}")
    assert result.returncode == 2
    assert f"--input-file x: {path} is not UTF-8 text" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["workers"], ["runs"], ["status", "r"], ["cancel", "r"]])
def test_unreachable_nats_exits_1(command: list[str]) -> None:
    result = run_cli(*command, "--nats", f"nats://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "cannot reach NATS" in result.stderr
    assert "Traceback" not in result.stderr


async def test_no_coordinator_exits_1_and_submits_nothing(nats_url: str) -> None:
    for command in (["workers"], ["submit", f"{DAGS}:chain", "--input", "x=1"]):
        result = await asyncio.to_thread(run_cli, *command, "--nats", nats_url)
        assert result.returncode == 1, result.stderr
        assert "no coordinator answered" in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
