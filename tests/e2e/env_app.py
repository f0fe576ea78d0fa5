"""A deployed app's tasks (APP ``tests.e2e.env_app:broker``): its broker names no server
and no prefix, so the environment decides, as for ``fleet agent``."""

from __future__ import annotations

from taskiq_fleet import FleetBroker

broker = FleetBroker()


@broker.task
def add(a: int, b: int) -> int:
    return a + b
