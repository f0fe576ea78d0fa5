"""An app's tasks on taskiq-nats (``taskiq_nats_tasks.py``) and the same module moved to
the fleet (``taskiq_nats_moved.py``): the two files differ in the broker line and its
import only. ``fleet agent examples.taskiq_nats_tasks:broker`` serves the first as it
is; the second submits to the fleet. ``python -m examples.from_taskiq_nats`` runs both.

The profiles and ``ResourceLabelsMiddleware`` come from ``taskiq_fleet``; under
``taskiq worker`` they only put a label on each message. The tasks are named explicitly
only so that the two versions can sit side by side under the same names; in a project the
broker line changes in place and the default names (``module:function``) stay as they are.
"""

from __future__ import annotations

import os

from taskiq_fleet import CPUProfile, FleetBroker, RAMProfile, ResourceLabelsMiddleware

NATS_URL = os.environ.get("NATS_URL", "nats://localhost:4222")

broker = FleetBroker(NATS_URL).with_middlewares(ResourceLabelsMiddleware())


@broker.task("images.resize")
@CPUProfile(cpu_units=2)
@RAMProfile(ram_mb=4096)
def resize(path: str, size: int) -> str:
    return f"{path}@{size}px"


@broker.task("text.count_words")
async def count_words(text: str) -> int:
    return len(text.split())
