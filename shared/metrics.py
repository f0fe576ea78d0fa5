"""Prometheus pages for the coordinator and the agents (``--metrics-port``).

Both processes keep their figures as plain Python (``Buckets``, ints and counters in dicts),
updated by hooks that cost a few increments and need no library, and build metric
families only when Prometheus scrapes. The scrape is handed to the process's own event
loop (``serve``), so a collector reads the scheduler or the agent between two of their
steps, never halfway through one, and needs no locks: prometheus-client's HTTP server
runs in a thread of its own and waits for the loop's answer.

prometheus-client is an optional extra (``metrics``); nothing here imports it until a port
is asked for, and ``missing()`` says in one line what to install.
"""

from __future__ import annotations

import asyncio
import bisect
import importlib.util
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

INSTALL = "pip install 'taskiq-fleet[metrics]'"
SCRAPE_TIMEOUT = 10.0
"""Seconds a scrape waits for the event loop before it fails (a loop that busy is news)."""
DURATION_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
"""Seconds: from a few milliseconds (``kiq`` of small tasks) to half an hour."""

Collect = Callable[[], Iterable["Metric"]]


def missing() -> str | None:
    """One line saying what to install, or None when prometheus-client is there."""
    if importlib.util.find_spec("prometheus_client") is None:
        return f"--metrics-port needs prometheus-client: {INSTALL}"
    return None


@dataclass
class Buckets:
    """A histogram kept as plain numbers: observing costs a bisection and two additions."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    """Observations per bound (not cumulative); the last one is above every bound."""
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus's buckets: (upper bound, observations at or below it), ``+Inf`` last."""
        found, running = [], 0
        for bound, n in zip((*map(str, map(float, self.bounds)), "+Inf"), self.counts, strict=True):
            running += n
            found.append((bound, float(running)))
        return found


def histogram(
    name: str, doc: str, labels: Sequence[str], series: Mapping[tuple[str, ...], Buckets]
) -> Metric:
    """One histogram family from ``Buckets`` by label values."""
    from prometheus_client.core import HistogramMetricFamily

    family = HistogramMetricFamily(name, doc, labels=list(labels))
    for values, buckets in sorted(series.items()):
        family.add_metric(list(values), buckets.cumulative(), buckets.total)
    return family


def gauge(
    name: str, doc: str, labels: Sequence[str], values: Mapping[tuple[str, ...], float]
) -> Metric:
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def counter(
    name: str, doc: str, labels: Sequence[str], values: Mapping[tuple[str, ...], float]
) -> Metric:
    """``name`` without ``_total``: prometheus-client adds it."""
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(name, doc, labels=list(labels))
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def serve(port: int, host: str, collect: Collect) -> Callable[[], None]:
    """Serve ``/metrics`` on ``host:port`` (with the process's own CPU and memory figures);
    call from the event loop the figures live on. Returns what stops the server."""
    from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
    from prometheus_client.registry import Collector

    loop = asyncio.get_running_loop()

    async def gather() -> list[Metric]:
        return list(collect())

    class OnLoop(Collector):
        def collect(self) -> Iterable[Metric]:
            return asyncio.run_coroutine_threadsafe(gather(), loop).result(SCRAPE_TIMEOUT)

    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    registry.register(OnLoop())
    server, thread = start_http_server(port, host, registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(SCRAPE_TIMEOUT)

    return stop


def labelled(values: Mapping[Any, float]) -> dict[tuple[str, ...], float]:
    """Keys as one-label tuples, for ``gauge`` and ``counter``."""
    return {(str(key),): value for key, value in values.items()}
