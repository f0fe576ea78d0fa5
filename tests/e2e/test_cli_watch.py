"""The CLI as a person and a script see it (issue 17, item 3), against a coordinator and an
agent as processes: ``status --watch`` to a pipe, as JSON lines and on a terminal, ``submit``'s
progress bar on a terminal, a failed node's traceback, a closed pipe, the terminal width."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.dag import Dag, Node
from taskiq_fleet import CoordinatorClient
from tests.e2e.cli_support import CLI, FLEET, Terminal, cells, cli_fleet
from tests.processes import ROOT

DAGS = "tests.e2e.cli_dags"
LIGHT = {"cpu": 0.1}


@pytest.fixture
async def fleet(nats_url: str, tmp_path: Path) -> AsyncIterator[CLI]:
    async with cli_fleet(nats_url, tmp_path) as cli:
        yield cli


def gated(gate: Path) -> Dag:
    """``held`` runs until the test creates ``gate``; ``last`` comes after it."""
    return Dag(
        nodes=(
            Node(id="held", task="async_wait_for_gate", args=(str(gate),), request=LIGHT),
            *(Node(id=f"quick{i}", task="add", args=(i, 1), request=LIGHT) for i in range(3)),
            Node(id="last", task="add", args=(1, 2), after=("held",), request=LIGHT),
        )
    )


async def submit_gated(nats_url: str, gate: Path) -> str:
    async with await CoordinatorClient.connect(nats_url) as client:
        return (await client.submit(gated(gate), name="gated")).run_id


async def watcher(nats_url: str, *args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return await asyncio.create_subprocess_exec(
        *FLEET, "status", *args, "--watch", "--interval", "0.1", "--nats", nats_url,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def lines_until(proc: asyncio.subprocess.Process, done: str) -> list[str]:
    """stdout's lines up to the first one containing ``done``."""
    assert proc.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(60):
        while not lines or done not in lines[-1]:
            line = await proc.stdout.readline()
            assert line, f"{done!r} never printed; printed:\n" + "\n".join(lines)
            lines.append(line.decode().rstrip("\n"))
    return lines


@pytest.mark.usefixtures("fleet")
async def test_status_watch_to_a_pipe_prints_a_line_per_change(
    nats_url: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    run_id = await submit_gated(nats_url, gate)
    proc = await watcher(nats_url, run_id)
    shown = await lines_until(proc, "node held: running on w1")
    gate.touch()
    rest, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = shown + rest.decode().splitlines()
    changes = [line for line in lines if line.startswith("  node ")]
    assert len(changes) == len(set(changes)), changes  # a line per change, none twice
    assert any(line.startswith("  node last: succeeded on w1 in ") for line in changes)
    assert not any("\x1b" in line for line in lines)
    assert f"run {run_id} (gated)" in lines
    assert "  status:    succeeded" in lines
    assert cells("\n".join(lines), "last")[:3] == ["last", "add", "succeeded"]


@pytest.mark.usefixtures("fleet")
async def test_status_watch_json_is_a_line_per_change(nats_url: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    run_id = await submit_gated(nats_url, gate)
    proc = await watcher(nats_url, run_id, "--json")
    shown = await lines_until(proc, '"id":"held","task":"async_wait_for_gate","status":"running"')
    gate.touch()
    rest, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    views = [json.loads(line) for line in [*shown, *rest.decode().splitlines()]]
    assert all(a != b for a, b in itertools.pairwise(views))
    assert views[0]["status"] == "running"
    assert (views[-1]["run_id"], views[-1]["status"]) == (run_id, "succeeded")


@pytest.mark.usefixtures("fleet")
async def test_status_watch_on_a_terminal_redraws_a_progress_bar(
    nats_url: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    run_id = await submit_gated(nats_url, gate)
    terminal = Terminal(["status", run_id, "--watch", "--interval", "0.1", "--nats", nats_url])
    try:
        await asyncio.to_thread(terminal.until, "1 running")
        gate.touch()
        code, err = await asyncio.to_thread(terminal.wait)
    finally:
        terminal.kill()
    assert code == 0, err
    assert "5/5 done" in terminal.text
    assert "5 succeeded" in terminal.text
    assert "\x1b[2K" in terminal.raw  # lines erased and drawn again, in place
    assert "node quick0:" not in terminal.text  # no line per node change
    assert "  status:    succeeded" in terminal.text
    assert max(map(len, terminal.text.splitlines())) <= 100


async def test_submit_on_a_terminal_shows_the_bar_not_a_line_per_node(
    nats_url: str, fleet: CLI
) -> None:
    terminal = Terminal(["submit", f"{DAGS}:chain", "--input", "x=5", "--nats", nats_url])
    try:
        code, err = await asyncio.to_thread(terminal.wait)
    finally:
        terminal.kill()
    assert code == 0, err
    text = terminal.text
    assert re.search(r"\[█+\] 2/2 done", text), text
    assert "2 succeeded" in text
    assert "  node first:" not in text
    assert "outputs:\n  x = 5\n  y = 6\n  z = 16\n" in text.replace("\r", "")


async def test_status_shows_a_failed_nodes_error_and_traceback(fleet: CLI) -> None:
    failed = await fleet("submit", f"{DAGS}:failing", "--no-wait", "--json")
    run_id = json.loads(failed.stdout)["run_id"]
    watched = await fleet("status", run_id, "--watch")
    assert watched.returncode == 1
    assert f"run {run_id} failed" in watched.stderr
    shown = await fleet("status", run_id)
    assert shown.returncode == 0, shown.stderr
    failure = shown.stdout.split("\n\n")[-1].splitlines()
    assert failure[0] == "node boom failed (attempt 1 on w1): ValueError: it broke"
    assert failure[1] == "  Traceback (most recent call last):"
    assert "      raise ValueError(message)" in failure
    assert failure[-1] == "  ValueError: it broke"


@pytest.mark.parametrize("command", [["workers"], ["runs"], ["completion", "bash"]])
async def test_a_closed_pipe_ends_quietly(fleet: CLI, nats_url: str, command: list[str]) -> None:
    """``fleet runs | head -1``: stdout's reader is gone before the command writes."""
    nats = ["--nats", nats_url] if command[0] != "completion" else []
    read, write = os.pipe()
    os.close(read)
    try:
        done = await asyncio.to_thread(
            subprocess.run, [*FLEET, *command, *nats],
            cwd=ROOT, stdout=write, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")


@pytest.mark.parametrize("columns", [80, 100])
async def test_fleet_workers_fits_the_terminal(fleet: CLI, columns: int) -> None:
    shown = await fleet("workers", env={"COLUMNS": str(columns)})
    assert shown.returncode == 0, shown.stderr
    assert max(map(len, shown.stdout.splitlines())) <= columns
    assert cells(shown.stdout, "w1")[:3] == ["w1", "healthy", "0/3"]


def test_the_watch_example_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "examples.watch_a_run"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "  node report: succeeded on demo in " in done.stdout
    assert "  status:    succeeded" in done.stdout
    assert cells(done.stdout, "demo")[:3] == ["demo", "healthy", "0/4"]
