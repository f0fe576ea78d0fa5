"""An agent's Prometheus page (``fleet agent --metrics-port``).

Task durations are measured by a taskiq middleware the agent adds to the app's broker
(``TaskTimes``): every attempt goes through the broker's middlewares (``executor.py``),
so the time from ``pre_execute`` to ``post_execute`` is the task's, by its name and how it
ended, with no line in the agent's service. The rest is read from the agent when
Prometheus scrapes, on its event loop (``shared.metrics.serve``): capacity and what its
own ledger holds per dimension and per GPU device, attempts running, outcomes waiting in
the outbox for JetStream, messages dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

from shared.metrics import DURATION_BOUNDS, Buckets, counter, gauge, histogram
from worker_agent.executor import AttemptCancelled

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from worker_agent.service import Agent

Series = dict[tuple[str, ...], float]


class TaskTimes(TaskiqMiddleware):
    """Each attempt's duration by task name and status (succeeded, failed, cancelled)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._started: dict[str, float] = {}
        self.durations: dict[tuple[str, str], Buckets] = {}

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        self._started[message.task_id] = self._clock()
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        started = self._started.pop(message.task_id, None)
        if started is None:  # an earlier middleware's pre_execute failed: never started
            return
        key = (message.task_name, _status(result))
        buckets = self.durations.get(key)
        if buckets is None:
            buckets = self.durations[key] = Buckets(DURATION_BOUNDS)
        buckets.observe(self._clock() - started)


def _status(result: TaskiqResult[Any]) -> str:
    if not result.is_err or result.error is None:
        return "succeeded"
    return "cancelled" if isinstance(result.error, AttemptCancelled) else "failed"


class AgentMetrics:
    """Every family of an agent's page, each labelled with the worker's name."""

    def __init__(self, agent: Agent, times: TaskTimes) -> None:
        self._agent = agent
        self._times = times

    def collect(self) -> Iterator[Metric]:
        agent = self._agent
        name = agent.name
        yield from self._capacity()
        yield gauge(
            "fleet_agent_running", "Attempts running", ["worker"], {(name,): len(agent._attempts)}
        )
        yield gauge(
            "fleet_agent_outbox_backlog",
            "Outcomes waiting to be stored by JetStream",
            ["worker"],
            {(name,): len(agent._outbox)},
        )
        yield gauge(
            "fleet_agent_draining",
            "1 while the agent drains",
            ["worker"],
            {(name,): agent._guard.draining},
        )
        yield counter(
            "fleet_agent_dropped_messages",
            "Malformed or stale messages dropped",
            ["worker"],
            {(name,): agent.dropped},
        )
        yield histogram(
            "fleet_task_duration_seconds",
            "Time of each attempt on this agent, by task name and how it ended",
            ["worker", "task", "status"],
            {(name, *key): buckets for key, buckets in self._times.durations.items()},
        )

    def _capacity(self) -> Iterator[Metric]:
        agent = self._agent
        spec, held = agent.spec, agent._guard.reserved()
        name = agent.name
        total: Series = {(name, "cpu"): spec.cpu, (name, "ram_mb"): float(spec.ram_mb)}
        used: Series = {(name, "cpu"): held.cpu, (name, "ram_mb"): float(held.ram_mb)}
        for resource, amount in spec.resources.items():
            total[(name, resource)] = amount
            used[(name, resource)] = held.resources.get(resource, 0.0)
        gpus: Series = {
            (name, str(g.index), g.model): held.gpus.get(g.index, 0.0) for g in spec.gpus
        }
        yield gauge(
            "fleet_agent_capacity",
            "Capacity advertised, per dimension",
            ["worker", "dimension"],
            total,
        )
        yield gauge(
            "fleet_agent_reserved",
            "Capacity held by running attempts, per dimension",
            ["worker", "dimension"],
            used,
        )
        yield gauge(
            "fleet_agent_gpu_reserved_share",
            "Share of each GPU device held by running attempts (0 to 1)",
            ["worker", "device", "model"],
            gpus,
        )
