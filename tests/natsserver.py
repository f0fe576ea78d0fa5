"""The tests' nats-server: the product's ``taskiq_fleet.natsserver``, re-exported.

``fleet up`` needs the same process management the tests use, so it lives in the
product; this module keeps the names the tests and benchmarks import from here.
"""

from __future__ import annotations

from taskiq_fleet.natsserver import (
    NATS_SERVER_ENV,
    NatsEndpoint,
    NatsServer,
    NatsServerError,
    NatsServerNotFoundError,
    find_nats_server,
    free_port,
    wait_until_ready,
)

__all__ = [
    "NATS_SERVER_ENV",
    "NatsEndpoint",
    "NatsServer",
    "NatsServerError",
    "NatsServerNotFoundError",
    "find_nats_server",
    "free_port",
    "wait_until_ready",
]
