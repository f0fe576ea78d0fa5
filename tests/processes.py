"""Fleet processes (agents now, the coordinator later) started for end-to-end tests.

Each runs as ``python -m taskiq_fleet.cli ...`` from the project root, exactly as
the ``fleet`` script would, with its log in a file the failure message quotes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
TASKS_APP = "tests.e2e.agent_tasks:broker"


async def until_exists(path: Path, within: float = 20.0) -> None:
    """Wait for a file another process creates; there is no event to await across processes,
    so this polls every 10 ms and fails after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not path.exists():  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.01)


class FleetProcess:
    def __init__(
        self, args: list[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.args = [sys.executable, "-m", "taskiq_fleet.cli", *args]
        self.log_path = log_path
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.args[3:5]} still running after {timeout} s; log:\n{self.log()[-4000:]}"
            ) from None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit: never leave a process behind."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def agent(
    nats_url: str,
    name: str,
    log_dir: Path,
    *extra: str,
    app: str = TASKS_APP,
    heartbeat: float = 0.2,
    env: Mapping[str, str] | None = None,
) -> FleetProcess:
    """``env``: variables set for this agent only, over the test process's own."""
    args = ["agent", app, "--nats", nats_url, "--name", name, "--heartbeat", str(heartbeat)]
    args += ["--log-format", "json", *extra]
    return FleetProcess(args, log_dir / f"agent-{name}.log", env)


def coordinator(nats_url: str, log_dir: Path, *extra: str) -> FleetProcess:
    args = ["coordinator", "--nats", nats_url, "--log-format", "json", *extra]
    return FleetProcess(args, log_dir / "coordinator.log")
