"""A user's tasks written for taskiq-nats, which ``fleet agent`` serves as they are.

The broker is taskiq-nats's; the resource profiles and ``ResourceLabelsMiddleware`` are
the fleet's (on taskiq-nats alone they only put a label on each message).
``test_taskiq_nats.py`` writes this module out as ``tests_app.py`` once per host, each
time with another broker line: as it is, with ``PullBasedJetStreamBroker``, and with
``FleetBroker`` for the process that submits.
"""

from __future__ import annotations

import os

from taskiq_nats import NatsBroker

from taskiq_fleet import CPUProfile, LabelProfile, RAMProfile, ResourceLabelsMiddleware

NATS_URL = os.environ.get("APP_NATS", "nats://localhost:4222")

broker = NatsBroker(NATS_URL, queue="tests_app").with_middlewares(ResourceLabelsMiddleware())


@broker.task
def add(a: int, b: int) -> int:
    return a + b


@broker.task
@CPUProfile(cpu_units=2)
@RAMProfile(ram_mb=4096)
def heavy(n: int) -> int:
    return sum(range(n))


@broker.task
@LabelProfile(required=["disk=ssd"])
async def checksum(text: str) -> int:
    return sum(text.encode())
