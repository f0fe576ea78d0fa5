"""Shared fixtures: a real NATS server with JetStream.

By default each test gets its own local nats-server process (fast, no Docker). Set
``FLEET_TEST_NATS=container`` to run NATS in Docker via testcontainers instead, e.g. to
check against the published image; those tests skip when no Docker engine is reachable.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.natsserver import (
    NatsEndpoint,
    NatsServer,
    NatsServerError,
    free_port,
    wait_until_ready,
)

if TYPE_CHECKING:
    from testcontainers.community.nats import NatsContainer

NATS_MODE_ENV = "FLEET_TEST_NATS"
NATS_IMAGE_ENV = "FLEET_TEST_NATS_IMAGE"
DEFAULT_NATS_IMAGE = "nats:2"

_CLIENT_PORT = 4222


class ContainerNats:
    """NATS in Docker, exposing the same ``url``/``port``/``stop``/``restart`` as NatsServer.

    The host port is bound explicitly rather than left to Docker because Docker may hand
    out a different ephemeral port when a stopped container starts again, which would
    break the "restart on the same URL" guarantee tests rely on. The JetStream store
    lives in the container's filesystem, which survives stop/start.
    """

    def __init__(self, image: str, *, startup_timeout: float = 30.0) -> None:
        from testcontainers.community.nats import NatsContainer

        self.server_name = f"fleet-test-{uuid.uuid4().hex[:12]}"
        self.startup_timeout = startup_timeout
        self.host = "127.0.0.1"
        self.port = free_port()
        self._container: NatsContainer = (
            NatsContainer(image)
            .with_command(f"-js -sd /data -m 8222 -n {self.server_name}")
            .with_bind_ports(_CLIENT_PORT, self.port)
        )

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self) -> ContainerNats:
        self._container.start()
        self.host = self._container.get_container_host_ip()
        self.port = self._container.get_exposed_port(_CLIENT_PORT)
        self._wait_ready()
        return self

    def stop(self) -> None:
        self._container.get_wrapped_container().stop(timeout=5)

    def restart(self) -> None:
        self.stop()
        self._container.get_wrapped_container().start()
        self._wait_ready()

    def close(self) -> None:
        self._container.stop()

    def _wait_ready(self) -> None:
        wait_until_ready(
            self.host,
            self.port,
            timeout=self.startup_timeout,
            server_name=self.server_name,
            check_alive=self._check_alive,
        )

    def _check_alive(self) -> None:
        container = self._container.get_wrapped_container()
        container.reload()
        if container.status in ("exited", "dead"):
            stdout, stderr = self._container.get_logs()
            tail = (stdout + stderr).decode("utf-8", errors="replace")[-4000:]
            raise NatsServerError(f"NATS container {container.status}:\n{tail}")


def _docker_unavailable_reason() -> str | None:
    try:
        from docker.errors import DockerException
        from testcontainers.core.docker_client import DockerClient
    except ImportError as exc:
        return f"testcontainers/docker not installed: {exc}"
    try:
        client = DockerClient().client
        try:
            client.ping()
        finally:
            client.close()
    except (DockerException, OSError) as exc:
        return f"no reachable Docker engine: {exc}"
    return None


def _nats(base_dir: Path) -> Iterator[NatsEndpoint]:
    mode = os.environ.get(NATS_MODE_ENV, "local").strip().lower() or "local"
    if mode == "container":
        reason = _docker_unavailable_reason()
        if reason is not None:
            pytest.skip(f"{NATS_MODE_ENV}=container but {reason}")
        container = ContainerNats(os.environ.get(NATS_IMAGE_ENV, DEFAULT_NATS_IMAGE))
        try:
            yield container.start()
        finally:
            container.close()
    elif mode == "local":
        with NatsServer(base_dir) as server:
            yield server
    else:
        pytest.fail(f"{NATS_MODE_ENV}={mode!r}: expected 'local' or 'container'")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsEndpoint]:
    """A fresh server per test, so JetStream state and restarts cannot leak between tests.

    Locally this is a ``NatsServer`` (``store_dir``, ``pid``, ``log_path``, ``kill()`` are
    available); under ``FLEET_TEST_NATS=container`` only the ``NatsEndpoint`` surface is.
    """
    yield from _nats(tmp_path / "nats")


@pytest.fixture
def nats_url(nats_server: NatsEndpoint) -> str:
    return nats_server.url


@pytest.fixture(scope="session")
def nats_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsEndpoint]:
    """One server for the whole run, for tests that only need a broker and use unique
    subjects/stream names. Do not stop or restart it: other tests share it.
    """
    yield from _nats(tmp_path_factory.mktemp("nats-session"))
