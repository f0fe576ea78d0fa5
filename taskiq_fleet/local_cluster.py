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

Agents come from a TOML file (``load_config``) or as ``count`` identical ones; the
configuration is checked completely, with the parsers ``fleet agent`` itself uses,
before any process starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self, TypeVar

from shared.resources import POLICY_NAMES
from shared.wire.subjects import Subjects
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

T = TypeVar("T")

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

DEFAULT_APP = "examples.tasks:broker"
DEFAULT_NATS_PORT = 4222
"""NATS's own default: ``fleet workers`` and friends find a cluster there without --nats."""

TOP_KEYS = ("app", "agent")
AGENT_KEYS = ("name", "app", "cpus", "ram_mb", "gpus", "labels", "headroom")

FLUSH_GRACE = 10.0
"""What an agent may take after its drain timeout to store outcomes (worker_agent's own)."""
COORDINATOR_STOP_TIMEOUT = 10.0
POLL = 0.05


class ConfigError(ValueError):
    """The cluster description cannot work; the message names the file, agent and key."""


class ClusterError(RuntimeError):
    """The cluster could not start, or one of its processes ended on its own."""


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentConfig:
    """One local agent: the overrides ``fleet agent`` takes, none meaning "detect"."""

    name: str
    app: str = DEFAULT_APP
    cpus: float | None = None
    ram_mb: int | None = None
    gpus: str | None = None
    """``--gpus`` spec (``1xA100:40960``); ``"0"`` for none; ``None``: detect through NVML."""
    labels: Mapping[str, str] = field(default_factory=dict)
    headroom: str | None = None

    def agent_options(self) -> list[str]:
        """The ``fleet agent`` options that describe this agent (capacity, labels)."""
        options = ["--name", self.name]
        if self.cpus is not None:
            options += ["--cpus", _number(self.cpus)]
        if self.ram_mb is not None:
            options += ["--ram-mb", str(self.ram_mb)]
        if self.gpus is not None:
            options += ["--gpus", self.gpus]
        if self.labels:
            options += ["--labels", ",".join(f"{k}={v}" for k, v in self.labels.items())]
        if self.headroom is not None:
            options += ["--headroom", self.headroom]
        return options


def _number(value: float) -> str:
    """Exact text for the command line: ``2`` not ``2.0``, never ``1e+06``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def identical_agents(count: int, app: str = DEFAULT_APP) -> tuple[AgentConfig, ...]:
    """``count`` agents named ``agent-1``...: each detects this host, as ``fleet agent`` does,
    so together they advertise more than the host has; a config file states capacities."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"the number of agents must be a whole number >= 1, got {count!r}")
    _check_app(app, "--app")
    return tuple(AgentConfig(name=f"agent-{i}", app=app) for i in range(1, count + 1))


def load_config(path: Path | str, *, default_app: str = DEFAULT_APP) -> tuple[AgentConfig, ...]:
    """The agents a TOML file describes; ``ConfigError`` (one line) for anything wrong.

    ::

        app = "examples.tasks:broker"      # optional: default for every agent

        [[agent]]
        name = "gpu"
        cpus = 4
        ram_mb = 8192
        gpus = "1xA100:40960"
        labels = { gpu = true, zone = "eu" }   # or "gpu=true,zone=eu"
        headroom = "cpu=0.5"                   # or { cpu = 0.5, ram_mb = 512 }
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc.reason}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, default_app=default_app, source=str(path))


def parse_config(
    data: Mapping[str, Any], *, default_app: str = DEFAULT_APP, source: str = "config"
) -> tuple[AgentConfig, ...]:
    """Check a parsed cluster description completely: every key known, every value usable
    by ``fleet agent`` (same parsers), names unique; at least one agent."""
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r} (known: {', '.join(TOP_KEYS)}; "
            "agents go in [[agent]] tables)"
        )
    app = data.get("app", default_app)
    if "app" in data:
        _check_app(app, f"{source}: app")
    agents = data.get("agent")
    if agents is None:
        raise ConfigError(f"{source}: no [[agent]] table; describe at least one agent")
    if not isinstance(agents, list) or not all(isinstance(a, dict) for a in agents):
        raise ConfigError(f"{source}: 'agent' must be an array of tables: write [[agent]]")
    if not agents:
        raise ConfigError(f"{source}: no [[agent]] table; describe at least one agent")
    parsed: list[AgentConfig] = []
    seen: set[str] = set()
    for number, table in enumerate(agents, start=1):
        agent = _agent(table, number, app, source)
        if agent.name in seen:
            raise ConfigError(f"{source}: agent {number}: name {agent.name!r} is used twice")
        seen.add(agent.name)
        parsed.append(agent)
    return tuple(parsed)


def _agent(table: Mapping[str, Any], number: int, app: str, source: str) -> AgentConfig:
    from shared.wire.subjects import token

    name = table.get("name", f"agent-{number}")
    where = f"{source}: agent {number}" + (f" ({name!r})" if isinstance(name, str) else "")
    unknown = sorted(set(table) - set(AGENT_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(AGENT_KEYS)})")
    try:
        if not isinstance(name, str):
            raise ValueError(f"must be a string, got {_shown(name)}")
        token(name)
    except ValueError as exc:
        raise ConfigError(f"{where}: name: {exc}") from None
    agent_app = table.get("app", app)
    if "app" in table:
        _check_app(agent_app, f"{where}: app")
    return AgentConfig(
        name=name,
        app=agent_app,
        cpus=_checked(where, "cpus", table, _cpus),
        ram_mb=_checked(where, "ram_mb", table, _ram_mb),
        gpus=_checked(where, "gpus", table, _gpus),
        labels=_checked(where, "labels", table, _labels) or {},
        headroom=_checked(where, "headroom", table, _headroom),
    )


def _checked(
    where: str, key: str, table: Mapping[str, Any], check: Callable[[object], T]
) -> T | None:
    if key not in table:
        return None
    try:
        return check(table[key])
    except ValueError as exc:
        raise ConfigError(f"{where}: {key}: {exc}") from None


def _shown(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def _check_app(app: object, where: str) -> None:
    if not isinstance(app, str):
        raise ConfigError(f"{where}: must be a string 'module:broker', got {_shown(app)}")
    module, sep, attribute = app.partition(":")
    if not sep or not module.strip() or not attribute.strip():
        raise ConfigError(f"{where}: must look like 'module:broker', got {app!r}")


def _cpus(value: object) -> float:
    from shared.resources import to_milli

    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number of cores, got {_shown(value)}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be > 0, got {value!r}")
    to_milli(value, "cpus")
    return float(value)


def _ram_mb(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a whole number of MB, got {_shown(value)}")
    if value <= 0:
        raise ValueError(f"must be > 0, got {value!r}")
    return value


def _gpus(value: object) -> str:
    from worker_agent.inventory import parse_gpu_spec

    if value == 0 and not isinstance(value, bool):
        return "0"
    if not isinstance(value, str):
        raise ValueError(f"must be a spec like '1xA100:40960' or 0 for none, got {_shown(value)}")
    parse_gpu_spec(value)
    return value.strip() or "0"


def _labels(value: object) -> dict[str, str]:
    from shared.labels import check_label_key, label_value
    from worker_agent.inventory import parse_labels

    if isinstance(value, str):
        return parse_labels(value)
    if not isinstance(value, dict):
        raise ValueError(f"must be a table {{ key = value }} or 'k=v,...', got {_shown(value)}")
    labels: dict[str, str] = {}
    for key, raw in value.items():
        check_label_key(key)
        if isinstance(raw, dict | list) or raw is None:
            raise ValueError(f"{key}: must be a string, number or boolean, got {_shown(raw)}")
        text = label_value(raw)
        if not text or "," in text:
            raise ValueError(f"{key}: value {text!r} must be non-empty and without ','")
        labels[key] = text
    return labels


def _headroom(value: object) -> str:
    from worker_agent.inventory import parse_headroom

    if isinstance(value, dict):
        parts = []
        for key, amount in value.items():
            if isinstance(amount, bool) or not isinstance(amount, int | float | str):
                raise ValueError(f"{key}: must be an amount or 'N%', got {_shown(amount)}")
            parts.append(f"{key}={_number(amount) if not isinstance(amount, str) else amount}")
        text = ",".join(parts)
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError(f"must be 'cpu=0.5,ram_mb=1024', '10%' or a table, got {_shown(value)}")
    parse_headroom(text)
    return text


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
            "--heartbeat", _number(self.heartbeat),
            "--drain-timeout", _number(self.drain_timeout),
            "--log-format", self.log_format,
        )  # fmt: skip

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
        self.server = NatsServer(
            self.state_dir,
            port=port,
            store_dir=self.state_dir / "jetstream",
            log_path=self.log_dir / "nats-server.log",
            supervised=True,
        )
        try:
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
            if len(self.workers) == len(ours):
                return
            await asyncio.sleep(POLL)

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
        agents = list(self.agent_processes.values())
        for child in agents:
            child.terminate()
        await _wait_all(agents, self.drain_timeout + FLUSH_GRACE + 5)
        self._kill_late(agents)
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
