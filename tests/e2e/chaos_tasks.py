"""Tasks the fault suite (``python -m chaos``) and its short e2e tests give to agents
(APP ``tests.e2e.chaos_tasks:broker``).

``step`` records each execution that ran to its end as a file named after its node and
attempt, so the suite can count a node that completed twice under one attempt.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from taskiq import InMemoryBroker

from taskiq_fleet import current_attempt

broker = InMemoryBroker()


@broker.task("chaos_step")
async def chaos_step(seconds: float, tag: str, record: str, x: int = 0) -> int:
    """Sleep, then leave ``<tag>.<attempt>.<pid>.<random>`` in ``record``: one file per
    execution that completed. Returns ``x + 1`` so a chain can check its inputs."""
    await asyncio.sleep(seconds)
    name = f"{tag}.{current_attempt()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(Path(record, name).touch, exist_ok=False)
    return x + 1
