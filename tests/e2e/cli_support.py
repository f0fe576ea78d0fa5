"""What the CLI's end-to-end tests share: a coordinator and an agent as processes, the CLI
run as a subprocess (to a pipe, or to a pseudo-terminal the way a person sees it)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from taskiq_fleet import CoordinatorClient
from tests.processes import ROOT, agent, coordinator

CLI = Callable[..., Coroutine[Any, Any, subprocess.CompletedProcess[str]]]
FLEET = [sys.executable, "-m", "taskiq_fleet.cli"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def run_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """To pipes: tables have no width limit unless ``env`` sets ``COLUMNS``."""
    inherited = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [*FLEET, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**inherited, **(env or {})},
    )


def cells(output: str, first: str) -> list[str]:
    """The cells of the table row starting with ``first``."""
    for line in output.splitlines():
        parts = re.split(r"\s{2,}", line.strip())
        if parts[0] == first:
            return parts
    raise AssertionError(f"no row {first!r} in:\n{output}")


@contextlib.asynccontextmanager
async def cli_fleet(nats_url: str, tmp_path: Path) -> AsyncIterator[CLI]:
    """A coordinator and agent ``w1`` (3 cores, 2048 MB, two L4s, zone=test); the CLI
    pointed at them."""
    coord = coordinator(nats_url, tmp_path).start()
    worker = agent(
        nats_url, "w1", tmp_path, "--cpus", "3", "--ram-mb", "2048", "--gpus", "2xL4:24576",
        "--labels", "zone=test",
    ).start()  # fmt: skip
    try:
        async with await CoordinatorClient.connect(nats_url) as client:
            await client.wait_ready(1)

        async def cli(
            *args: str, env: Mapping[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
            return await asyncio.to_thread(run_cli, *args, "--nats", nats_url, env=env)

        yield cli
    finally:
        worker.stop()
        coord.stop()


class Terminal:
    """A CLI process whose stdout is a pseudo-terminal of ``columns`` x 24, as in a person's
    shell; what it writes is collected as it comes (``text`` has the escape codes taken
    out, ``raw`` keeps them). stderr is a pipe apart."""

    def __init__(self, args: list[str], columns: int = 100) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns)}
        self.proc = subprocess.Popen(
            [*FLEET, *args], cwd=ROOT, stdin=slave, stdout=slave, stderr=subprocess.PIPE,
            env=env, close_fds=True,
        )  # fmt: skip
        os.close(slave)
        self._master = master
        self._chunks: list[bytes] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: the process closed the terminal
                chunk = b""
            with self._changed:
                if not chunk:
                    self._chunks.append(b"")
                    self._changed.notify_all()
                    return
                self._chunks.append(chunk)
                self._changed.notify_all()

    @property
    def raw(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw)

    def until(self, wanted: str, within: float = 60.0) -> str:
        """Block until ``wanted`` has been shown (escape codes aside)."""
        with self._changed:
            if (
                not self._changed.wait_for(
                    lambda: wanted in self.text or (self._chunks[-1:] == [b""]), within
                )
                or wanted not in self.text
            ):
                raise AssertionError(f"{wanted!r} never shown; shown:\n{self.text[-3000:]}")
        return self.text

    def wait(self, within: float = 60.0) -> tuple[int, str]:
        """The exit code and stderr, once the process and the reader are done."""
        _, err = self.proc.communicate(timeout=within)
        self._reader.join(within)
        os.close(self._master)
        return self.proc.returncode, err.decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
