"""``LocalCluster``: a nats-server, a coordinator and agents on this host, for ``fleet up``.

Every part runs as its own process, started exactly as ``fleet coordinator`` and
``fleet agent`` would be on separate hosts (``python -m taskiq_fleet.cli ...``), so a
local cluster behaves like a real one: agents drain on SIGTERM, a task that crashes or
blocks takes down only its agent, and each process has its own log.

Everything the cluster writes lives under one state directory (default: a fresh
temporary one): ``jetstream/`` (the store), ``logs/nats-server.log``,
``logs/coordinator.log``, ``logs/agents/NAME.log``, and ``tmp/``, which is every child's
``TMPDIR``, so not even a task's temporary file lands elsewhere; ``fleet.lock`` keeps a
second cluster off the same store while this one runs. A temporary state directory is
removed when the cluster stops cleanly and kept, with its logs, when something failed; a
chosen one is kept, so a cluster started on it again finds its runs.

No process outlives the cluster: ``stop()`` ends agents first (they drain and store
their outcomes), then the coordinator, then nats-server, and SIGKILLs whatever does not
exit in time; an exception or a second signal ends in ``kill()``; a finalizer covers an
owner that never called ``stop()``; and on Linux each child is tied to the owner's life
(``tie_to_parent``), which covers the owner being killed outright.

Agents come from a TOML file or as ``count`` identical ones (``cluster_config``),
checked completely before any process starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Self

from shared.resources import POLICY_NAMES
from shared.wire.subjects import Subjects
from taskiq_fleet.cluster_config import (
    AGENT_KEYS,
    DEFAULT_APP,
    AgentConfig,
    ConfigError,
    identical_agents,
    load_config,
    parse_config,
    plain_number,
)
from taskiq_fleet.natsserver import (
    NatsServer,
    NatsServerError,
    NatsServerNotFoundError,
    free_port,
    tail_text,
    tie_to_parent,
)

if TYPE_CHECKING:
    from shared.wire.runs import WorkerView
    from taskiq_fleet.client import CoordinatorClient

__all__ = [
    "AGENT_KEYS",
    "DEFAULT_APP",
    "DEFAULT_NATS_PORT",
    "AgentConfig",
    "ClusterError",
    "ConfigError",
    "LocalCluster",
    "identical_agents",
    "load_config",
    "parse_config",
]

DEFAULT_NATS_PORT = 4222
"""NATS's own default: ``fleet workers`` and friends find a cluster there without --nats."""

FLUSH_GRACE = 10.0
"""What an agent may take after its drain timeout to store outcomes (worker_agent's own)."""
COORDINATOR_STOP_TIMEOUT = 10.0
POLL = 0.05


class ClusterError(RuntimeError):
    """The cluster could not start, or one of its processes ended on its own."""


# -- processes ---------------------------------------------------------------------------------


class _Child:
    """One fleet process: its command, its log file, and a handle we never lose."""

    def __init__(self, name: str, command: list[str], log_path: Path) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed = False

    def start(self, env: Mapping[str, str], cwd: Path) -> None:
        # From the calling (main) thread: tie_to_parent ties the child to the forking thread.
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches only the owner
                preexec_fn=tie_to_parent(),
            )

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.killed = True
            self.proc.kill()
            self.proc.wait()

    def ended(self) -> str:
        return (
            f"{self.name} exited with code {self.returncode}; "
            f"its log {self.log_path} ends with:\n{tail_text(self.log_path, 4000).rstrip()}"
        )


async def _wait_all(children: Sequence[_Child], timeout: float) -> None:
    """Until every child has exited or ``timeout`` passed; ``Popen.wait`` would block the loop
    (and a thread would break ``tie_to_parent``), so this polls."""
    deadline = time.monotonic() + timeout
    while any(c.alive for c in children) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(POLL)


def _kill_all(children: list[_Child]) -> None:
    for child in children:
        child.kill()


def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# -- the cluster -------------------------------------------------------------------------------


def _any_free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


class LocalCluster:
    """nats-server (unless ``nats_url`` names one), a coordinator and ``agents`` on this host.

    ``agents`` is a sequence of ``AgentConfig`` or a number of identical ones serving
    ``app``. ``port``: the embedded server's port; ``None`` takes 4222 when it is free
    (where the ``fleet`` commands look by default), else any free port; 0 any free port.
    ``heartbeat`` is the agents' interval: a fresh coordinator places nothing until 1.5
    intervals after the first agent reported, and on one host heartbeats cost nothing, so
    it is shorter than ``fleet agent``'s 2 s. Use as ``async with LocalCluster(...) as
    cluster:`` or ``await start()`` / ``await stop()``, from the main thread's event loop.
    """

    def __init__(
        self,
        agents: Sequence[AgentConfig] | int = 2,
        *,
        app: str = DEFAULT_APP,
        nats_url: str | None = None,
        state_dir: Path | str | None = None,
        port: int | None = None,
        policy: str = "hybrid",
        prefix: str = "fleet",
        heartbeat: float = 0.5,
        drain_timeout: float = 10.0,
        ready_timeout: float = 60.0,
        log_format: str = "console",
        keep_state: bool | None = None,
        python: str = sys.executable,
        cwd: Path | str | None = None,
        dashboard: bool = False,
    ) -> None:
        self.agents = identical_agents(agents, app) if isinstance(agents, int) else tuple(agents)
        if not self.agents:
            raise ConfigError("a cluster needs at least one agent")
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise ConfigError(f"agent names must be unique, got {names}")
        if policy not in POLICY_NAMES:
            raise ConfigError(
                f"unknown policy {policy!r}: expected one of {', '.join(POLICY_NAMES)}"
            )
        try:
            Subjects(prefix)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.external_url = nats_url
        self.requested_state_dir = None if state_dir is None else Path(state_dir)
        self.port = port
        self.policy = policy
        self.prefix = prefix
        self.heartbeat = heartbeat
        self.drain_timeout = drain_timeout
        self.ready_timeout = ready_timeout
        self.log_format = log_format
        self.keep_state = keep_state
        self.python = python
        self.cwd = Path.cwd() if cwd is None else Path(cwd)

        self.server: NatsServer | None = None
        self.coordinator: _Child | None = None
        self.dashboard: _Child | None = None
        self.dashboard_port: int | None = None
        """Where ``fleet dashboard`` listens, when one is started (``dashboard`` and its
        extra installed)."""
        self._want_dashboard = dashboard
        self.agent_processes: dict[str, _Child] = {}
        self.workers: list[WorkerView] = []
        """Our agents as the coordinator sees them, in configuration order, once ready."""
        self._state: Path | None = None
        self._temporary = False
        self._lock: IO[str] | None = None
        self._children: list[_Child] = []
        self._finalizer = weakref.finalize(self, _kill_all, self._children)
        self._started = False
        self._stopped = False
        self._failed = False
        self.clean = True
        """False once something had to be killed or exited with an error."""

    # -- what is where ---------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        if self._state is None:
            raise ClusterError("the cluster has not been started")
        return self._state

    @property
    def temporary_state(self) -> bool:
        """The state directory is a fresh temporary one, removed after a clean stop."""
        return self._temporary

    @property
    def nats_url(self) -> str:
        if self.external_url is not None:
            return self.external_url
        if self.server is None:
            raise ClusterError("the cluster has not been started")
        return self.server.url

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def store_dir(self) -> Path | None:
        """The embedded server's JetStream store; ``None`` with an external server."""
        return None if self.server is None else self.server.store_dir

    def log_paths(self) -> dict[str, Path]:
        """Process name (``nats-server``, ``coordinator``, ``agent NAME``) -> its log file."""
        paths = {} if self.server is None else {"nats-server": self.server.log_path}
        paths["coordinator"] = self.log_dir / "coordinator.log"
        if self._want_dashboard:
            paths["dashboard"] = self.log_dir / "dashboard.log"
        for agent in self.agents:
            paths[f"agent {agent.name}"] = self.log_dir / "agents" / f"{agent.name}.log"
        return paths

    def pids(self) -> dict[str, int]:
        """Process name -> pid, of every process started and still known."""
        found: dict[str, int] = {}
        if self.server is not None and self.server.running:
            found["nats-server"] = self.server.pid
        for child in self._children:
            if child.pid is not None:
                found[child.name] = child.pid
        return found

    # -- command lines ---------------------------------------------------------------------

    def _fleet(self, *args: str) -> list[str]:
        return [self.python, "-m", "taskiq_fleet.cli", *args]

    def coordinator_command(self, nats_url: str) -> list[str]:
        return self._fleet(
            "coordinator", "--nats", nats_url, "--prefix", self.prefix,
            "--policy", self.policy, "--log-format", self.log_format,
        )  # fmt: skip

    def agent_command(self, agent: AgentConfig, nats_url: str) -> list[str]:
        return self._fleet(
            "agent", agent.app, "--nats", nats_url, "--prefix", self.prefix,
            *agent.agent_options(),
            "--heartbeat", plain_number(self.heartbeat),
            "--drain-timeout", plain_number(self.drain_timeout),
            "--log-format", self.log_format,
        )  # fmt: skip

    def dashboard_command(self, nats_url: str, port: int) -> list[str]:
        return self._fleet(
            "dashboard", "--nats", nats_url, "--prefix", self.prefix, "--port", str(port),
            "--log-format", self.log_format,
        )  # fmt: skip

    @property
    def dashboard_url(self) -> str | None:
        return None if self.dashboard_port is None else f"http://127.0.0.1:{self.dashboard_port}/"

    def child_environment(self) -> dict[str, str]:
        """The owner's environment, unbuffered output (logs are read while running), and
        TMPDIR inside the state directory."""
        tmp = str(self.state_dir / "tmp")
        return {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": tmp, "TMP": tmp, "TEMP": tmp}

    # -- start -----------------------------------------------------------------------------

    async def start(self) -> Self:
        """Start everything and wait until the coordinator answers and knows every agent.

        ``ClusterError`` if anything fails; what was started is stopped before it is raised,
        also when the start is cancelled.
        """
        if self._started:
            raise ClusterError("a LocalCluster starts once")
        self._started = True
        try:
            self._prepare_state()
            url = self._start_nats()
            client = await self._connect(url)
            try:
                if self.external_url is not None:
                    await self._refuse_second_coordinator(client, url)
                self._spawn(url)
                await self._until_ready(client)
            finally:
                await client.close()
        except BaseException as exc:
            # Interrupted (a signal, a cancelled task) is no failure: temporary state goes.
            self._failed = isinstance(exc, Exception)
            await self.stop()
            raise
        return self

    def _prepare_state(self) -> None:
        # A chosen state dir becomes _state only once locked: stop() must neither remove,
        # unlock nor report on one that is not ours (unusable, or another cluster's).
        requested = self.requested_state_dir
        try:
            if requested is None:
                state = self._state = Path(tempfile.mkdtemp(prefix="fleet-up-"))
                self._temporary = True
            else:
                state = requested.expanduser().resolve()
            (state / "logs" / "agents").mkdir(parents=True, exist_ok=True)
            (state / "tmp").mkdir(exist_ok=True)
            lock = (state / "fleet.lock").open("a+")
        except OSError as exc:
            where = "a temporary state dir" if requested is None else f"state dir {requested}"
            raise ClusterError(f"cannot create {where}: {exc}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise ClusterError(
                f"state dir {self.requested_state_dir} is in use by another cluster "
                f"(pid {holder}); stop it or choose another --state-dir"
            ) from None
        self._state = state
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _start_nats(self) -> str:
        if self.external_url is not None:
            return self.external_url
        port = self.port
        if port is None:
            port = DEFAULT_NATS_PORT if _port_is_free(DEFAULT_NATS_PORT) else free_port()
        elif port == 0:
            port = free_port()
        try:
            self.server = NatsServer(
                self.state_dir,
                port=port,
                store_dir=self.state_dir / "jetstream",
                log_path=self.log_dir / "nats-server.log",
                supervised=True,
            )
            self.server.start()
        except (NatsServerError, NatsServerNotFoundError) as exc:
            raise ClusterError(str(exc)) from None
        return self.server.url

    async def _connect(self, url: str) -> CoordinatorClient:
        from shared.connection import NatsConnectError
        from taskiq_fleet.client import CoordinatorClient

        try:
            return await CoordinatorClient.connect(url, prefix=self.prefix)
        except NatsConnectError as exc:
            raise ClusterError(str(exc)) from None  # it names the URL

    async def _refuse_second_coordinator(self, client: CoordinatorClient, url: str) -> None:
        """Two coordinators on one prefix would both place the same work."""
        from taskiq_fleet.handles import FleetError

        with contextlib.suppress(FleetError):
            await client.workers()
            raise ClusterError(
                f"a coordinator already answers on prefix {self.prefix!r} at {url}; "
                "stop it or use another --prefix"
            )

    def _spawn(self, url: str) -> None:
        env = self.child_environment()
        logs = self.log_paths()
        self.coordinator = _Child("coordinator", self.coordinator_command(url), logs["coordinator"])
        self._children.append(self.coordinator)
        self.coordinator.start(env, self.cwd)
        for agent in self.agents:
            name = f"agent {agent.name}"
            child = _Child(name, self.agent_command(agent, url), logs[name])
            self._children.append(child)
            self.agent_processes[agent.name] = child
            child.start(env, self.cwd)
        self._spawn_dashboard(url, env, logs)

    def _spawn_dashboard(self, url: str, env: Mapping[str, str], logs: dict[str, Path]) -> None:
        """A dashboard on 8470 (or any free port), unless unwanted or its extra is missing."""
        from taskiq_fleet.dashboard.cli import DEFAULT_PORT, missing

        if not self._want_dashboard or missing() is not None:
            return
        self.dashboard_port = DEFAULT_PORT if _port_is_free(DEFAULT_PORT) else _any_free_port()
        command = self.dashboard_command(url, self.dashboard_port)
        self.dashboard = _Child("dashboard", command, logs["dashboard"])
        self._children.append(self.dashboard)
        self.dashboard.start(env, self.cwd)

    async def _until_ready(self, client: CoordinatorClient) -> None:
        ours = [a.name for a in self.agents]
        deadline = time.monotonic() + self.ready_timeout
        answered = False
        while True:
            self._check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                known = {w.spec.name for w in self.workers}
                missing = ", ".join(n for n in ours if n not in known)
                why = f"agents not registered: {missing}" if answered else "no coordinator answer"
                if answered and not missing:
                    why = f"the dashboard does not listen on port {self.dashboard_port}"
                raise ClusterError(
                    f"not ready after {self.ready_timeout:g}s: {why}; logs in {self.log_dir}"
                )
            try:
                found = await client.wait_ready(0, within=min(0.5, remaining))
            except TimeoutError:
                continue
            answered = True
            by_name = {w.spec.name: w for w in found}
            self.workers = [by_name[n] for n in ours if n in by_name]
            if len(self.workers) == len(ours) and self._dashboard_listens():
                return
            await asyncio.sleep(POLL)

    def _dashboard_listens(self) -> bool:
        """Ready means the printed dashboard address answers: it is a process of its own,
        and a page opened at "ready" was refused while it was still starting."""
        if self.dashboard_port is None:
            return True
        try:
            socket.create_connection(("127.0.0.1", self.dashboard_port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def _check_alive(self) -> None:
        if self.server is not None and not self.server.running:
            raise ClusterError(
                f"nats-server exited with code {self.server.returncode}; its log "
                f"{self.server.log_path} ends with:\n{self.server.log_tail(4000).rstrip()}"
            )
        for child in self._children:
            if not child.alive:
                raise ClusterError(child.ended())

    # -- running ---------------------------------------------------------------------------

    async def watch(self, interval: float = 0.5) -> str:
        """Return (a description) once any process of the cluster ended on its own: the
        owner should then stop the rest rather than serve half a cluster."""
        while True:
            try:
                self._check_alive()
            except ClusterError as exc:
                return str(exc)
            await asyncio.sleep(interval)

    # -- stop ------------------------------------------------------------------------------

    async def stop(self) -> bool:
        """Agents (SIGTERM: they drain), then the coordinator, then nats-server; SIGKILL for
        whatever does not exit in time. Returns whether everything ended cleanly. Idempotent.
        """
        if self._stopped:
            return self.clean
        self._stopped = True
        try:
            await self._stop_in_order()
        finally:
            self.kill()
            self._release_state()
        return self.clean

    async def _stop_in_order(self) -> None:
        first = list(self.agent_processes.values())  # agents drain; the dashboard only reads
        if self.dashboard is not None:
            first.append(self.dashboard)
        for child in first:
            child.terminate()
        await _wait_all(first, self.drain_timeout + FLUSH_GRACE + 5)
        self._kill_late(first)
        if self.coordinator is not None:
            self.coordinator.terminate()
            await _wait_all([self.coordinator], COORDINATOR_STOP_TIMEOUT)
            self._kill_late([self.coordinator])
        if self.server is not None and self.server.running:
            self.server.stop()
            if self.server.returncode not in (0, None):
                self.clean = False

    def _kill_late(self, children: Sequence[_Child]) -> None:
        for child in children:
            child.kill()
            # -SIGTERM: ended by our SIGTERM before it installed its handler (still starting).
            if child.killed or child.returncode not in (0, -signal.SIGTERM, None):
                self.clean = False

    def kill(self) -> None:
        """SIGKILL every process still running, at once (a second Ctrl-C, an error)."""
        for child in self._children:
            if child.alive:
                self.clean = False
            child.kill()
        if self.server is not None and self.server.running:
            self.clean = False
            self.server.kill()

    def _release_state(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None
            with contextlib.suppress(OSError):
                (self.state_dir / "fleet.lock").unlink()
        if self._state is None:
            return
        keep = self.keep_state
        if keep is None:
            keep = not (self._temporary and self.clean and not self._failed)
        if not keep:
            shutil.rmtree(self._state, ignore_errors=True)

    @property
    def state_removed(self) -> bool:
        return self._stopped and self._state is not None and not self._state.exists()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self._failed = True
        await self.stop()

    def __repr__(self) -> str:
        where = self._state if self._state is not None else "not started"
        return f"LocalCluster({len(self.agents)} agents, state={where})"
