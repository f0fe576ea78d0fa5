"""``fleet up`` as a user runs it: a subprocess that starts nats-server, a coordinator and
agents, serves a DAG, and on SIGTERM/SIGINT leaves no process and no file behind outside
its state directory. Also ``make demo``'s script, end to end."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from examples.pipelines import node
from examples.tasks import estimated_task, train_model
from taskiq_fleet import CoordinatorClient, Dag
from tests.processes import ROOT

pytestmark = pytest.mark.integration

CONFIG = """
[[agent]]
name = "cpu"
cpus = 2
ram_mb = 1024
labels = { zone = "a" }

[[agent]]
name = "gpu"
cpus = 1
ram_mb = 512
gpus = "1xA100:40960"
"""


@dataclass
class Up:
    """A running ``fleet up``: its output as it comes, line by line."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, pattern: str, within: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.seen))

    def rest(self, within: float = 30.0) -> str:
        """The remaining output, once the process has exited."""
        self.proc.wait(within)
        while (line := self.lines.get(timeout=5)) is not None:
            self.seen.append(line)
        return "\n".join(self.seen)

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)


@pytest.fixture
def sandbox(tmp_path: Path) -> dict[str, Path]:
    """A config, an empty TMPDIR and an empty working directory for ``fleet up``."""
    paths = {"config": tmp_path / "cluster.toml", "tmp": tmp_path / "tmp", "cwd": tmp_path / "cwd"}
    paths["config"].write_text(CONFIG)
    paths["tmp"].mkdir()
    paths["cwd"].mkdir()
    paths["state"] = tmp_path / "state"
    return paths


def start_up(sandbox: dict[str, Path], *extra: str) -> Up:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(sandbox["tmp"])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskiq_fleet.cli", "up", "--port", "0", *extra],
        cwd=sandbox["cwd"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Up(proc)


def files_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


def stop_safely(up: Up) -> None:
    """Whatever a failed test left running is killed: a test must not leak either."""
    if up.proc.poll() is None:
        children = up.children()
        up.proc.kill()
        up.proc.wait()
        for child in children:
            child.kill()


def demo_dag() -> Dag:
    return Dag(
        inputs=(),
        nodes=(
            node("doubled", estimated_task, kwargs={"data": {"a": 1}}),
            node("train", train_model, kwargs={"epochs": 2}),
            node("quadrupled", estimated_task, inputs={"data": "doubled"}),
        ),
    )


async def test_fleet_up_serves_a_dag_and_stops_leaving_nothing_behind(
    sandbox: dict[str, Path], tmp_path: Path
) -> None:
    before = files_under(tmp_path)
    up = start_up(sandbox, "--config", str(sandbox["config"]), "--state-dir", str(sandbox["state"]))
    try:
        url = up.until(r"^NATS\s+(nats://127\.0\.0\.1:\d+) \(embedded nats-server")[1]
        up.until(r"^fleet up: ready in ")
        output = "\n".join(up.seen)
        row = r"^cpu\s+2\s+1024\s+-\s+zone=a\s+-\s+taskiq_fleet\.demo\.tasks:broker\s+\d+$"
        assert re.search(row, output, re.M), output
        assert re.search(r"^gpu\s+1\s+512\s+1xA100:40960\s+gpu_models=A100\s", output, re.M)
        assert f"fleet workers --nats {url}" in output
        assert f"fleet submit taskiq_fleet.demo.pipelines:chain --nats {url}" in output

        shown = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "taskiq_fleet.cli", "workers", "--json", "--nats", url],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        workers = {w["spec"]["name"]: w["spec"] for w in json.loads(shown.stdout)}
        assert sorted(workers) == ["cpu", "gpu"]
        assert (workers["cpu"]["cpu"], workers["cpu"]["ram_mb"]) == (2.0, 1024)
        assert workers["cpu"]["labels"]["zone"] == "a"
        assert (workers["gpu"]["cpu"], workers["gpu"]["ram_mb"]) == (1.0, 512)
        assert [(g["model"], g["memory_mb"]) for g in workers["gpu"]["gpus"]] == [("A100", 40960)]

        async with await CoordinatorClient.connect(url) as client:
            handle = await client.submit(demo_dag())
            outputs = await handle.result(timeout=30)
            view = await handle.wait()
        assert outputs == {"doubled": {"a": 2}, "train": 2, "quadrupled": {"a": 4}}
        assert (view.node("train").worker, view.node("train").gpu_devices) == ("gpu", (0,))
        assert view.node("quadrupled").worker == "cpu"

        children = up.children()
        names = sorted(" ".join(c.cmdline()[1:5]) for c in children)
        # nats-server, the coordinator, two agents and the dashboard
        assert len(children) == 5, names
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(60) == 0, up.rest()
    finally:
        stop_safely(up)
    output = up.rest()
    assert "fleet up: SIGTERM: stopping" in output
    assert f"fleet up: stopped; state and logs kept in {sandbox['state']}" in output
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, [p.pid for p in alive]

    created = files_under(tmp_path) - before
    outside = {p for p in created if p.parts[0] != "state"}
    assert not outside, outside
    assert list(sandbox["tmp"].iterdir()) == []
    state = sandbox["state"]
    logs = {str(p.relative_to(state / "logs")) for p in (state / "logs").rglob("*.log")}
    assert logs == {
        "nats-server.log",
        "coordinator.log",
        "dashboard.log",
        "agents/cpu.log",
        "agents/gpu.log",
    }
    assert (state / "jetstream").is_dir()
    assert not (state / "fleet.lock").exists()
    assert "agent stopped" in (state / "logs" / "agents" / "cpu.log").read_text()


def test_sigint_while_starting_stops_everything_with_exit_0(
    sandbox: dict[str, Path], tmp_path: Path
) -> None:
    before = files_under(tmp_path)
    up = start_up(sandbox, "--agents", "1")
    children: list[psutil.Process] = []
    try:
        up.until(r"^fleet up: starting nats-server, a coordinator and 1 agent$")
        deadline = time.monotonic() + 30
        while len(children) < 3 and time.monotonic() < deadline:  # mid-start: all spawned
            children = up.children()
            time.sleep(0.01)
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(60) == 0, up.rest()
    finally:
        stop_safely(up)
    output = up.rest()
    assert "fleet up: SIGINT: stopping" in output
    assert "removed the temporary state dir" in output
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive
    assert files_under(tmp_path) == before  # the temporary state dir is gone too


def test_make_demo_runs_a_dag_on_a_local_fleet_and_prints_where_each_node_ran() -> None:
    began = time.monotonic()
    demo = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert time.monotonic() - began < 60
    out = demo.stdout
    assert re.search(r"^node\s+task\s+asks for\s+worker\s+gpus\s+duration$", out, re.M), out
    placements = re.split(r"^node\s+task\s.*\n-.*\n", out, flags=re.M)[1].split("\n\n")[0]
    rows = {line.split()[0]: line.split() for line in placements.splitlines()}
    assert len(rows) == 9, placements
    assert rows["train"][-3:-1] == ["gpu-a100", "0"]
    assert rows["count"][-3] == "gpu-a100"
    assert rows["cleanup"][-3] != "gpu-a100"
    assert rows["square_sum"][-3] in ("bigmem", "gpu-a100")
    assert "node train: succeeded on gpu-a100 gpu 0" in out
    assert '  report = "https://example.org/report"' in out
    assert "infeasible" in out
    assert "Stopped cleanly" in out


def test_an_agent_that_cannot_start_fails_fleet_up_with_its_log(
    sandbox: dict[str, Path], tmp_path: Path
) -> None:
    up = start_up(sandbox, "--agents", "1", "--app", "examples.nope:broker")
    try:
        up.until(r"^fleet up: starting ")
        children = up.children()
        assert up.proc.wait(60) == 1
    finally:
        stop_safely(up)
    output = up.rest()
    assert "fleet up: error: agent agent-1 exited with code 2; its log " in output
    assert "cannot import module 'examples.nope'" in output
    kept = re.search(r"state and logs kept in (\S+)", output)
    assert kept is not None, output
    assert Path(kept[1]).parent == sandbox["tmp"]  # kept for its logs, inside TMPDIR
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killing_fleet_up_outright_takes_its_processes_with_it(sandbox: dict[str, Path]) -> None:
    up = start_up(sandbox, "--agents", "1", "--state-dir", str(sandbox["state"]))
    try:
        up.until(r"^fleet up: ready in ")
        children = up.children()
        assert len(children) == 4  # nats-server, the coordinator, the agent, the dashboard
        up.proc.kill()  # no chance to stop anything: the kernel signals the children
        up.proc.wait()
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, [" ".join(p.cmdline()[:5]) for p in alive]
    finally:
        stop_safely(up)
