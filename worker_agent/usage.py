"""Live usage for heartbeats: what the host is really doing, beside what is reserved.

The pool never places work where real free memory cannot hold it, so the agent
reports available RAM as the tighter of the host's and its cgroup's (a
container at its memory limit has no room even on an idle host).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]

from worker_agent.cgroups import MIB, memory_limit

_USAGE_FILES = {"memory.max": "memory.current", "memory.limit_in_bytes": "memory.usage_in_bytes"}


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_percent: float
    available_ram_mb: int


class UsageProbe:
    """Samples since the previous call; the first CPU figure covers the time since creation."""

    def __init__(self, root: Path = Path("/")) -> None:
        limit = memory_limit(root)
        self._limit: tuple[int, Path] | None = None
        if limit is not None and limit.source.name in _USAGE_FILES:
            self._limit = (limit.value, limit.source.with_name(_USAGE_FILES[limit.source.name]))
        psutil.cpu_percent(None)

    def sample(self) -> Usage:
        available = int(psutil.virtual_memory().available)
        if self._limit is not None:
            total, usage_file = self._limit
            with contextlib.suppress(OSError, ValueError):
                available = min(available, max(0, total - int(usage_file.read_text())))
        return Usage(float(psutil.cpu_percent(None)), available // MIB)
