"""A small DAG over the documented example tasks, for ``fleet submit``.

``fleet up`` serves these tasks by default; by hand, start a coordinator and an agent that
serves them, then submit::

    fleet coordinator &
    fleet agent taskiq_fleet.demo.tasks:broker --cpus 4 --ram-mb 8192 &
    fleet submit taskiq_fleet.demo.pipelines:chain --input 'numbers=[3, 1, 4, 1, 5]'

(``--cpus``/``--ram-mb`` only make sure the tasks' requests fit a small host:
``heavy_computation`` asks for 2 cores and 4 GB.) Each node carries the resource
request its task declares with the profile decorators, read with ``request_of``.
"""

from __future__ import annotations

from typing import Any

from pydantic import JsonValue
from taskiq import AsyncTaskiqDecoratedTask

from taskiq_fleet import Dag, Node, request_of
from taskiq_fleet.demo.tasks import estimated_task, fetch_url, heavy_computation, memory_intensive


def node(
    node_id: str,
    task: AsyncTaskiqDecoratedTask[Any, Any],
    *,
    inputs: dict[str, str] | None = None,
    kwargs: dict[str, JsonValue] | None = None,
    after: tuple[str, ...] = (),
) -> Node:
    """A node running ``task`` with the resources its profile asks for, output = its id."""
    return Node(
        id=node_id,
        task=task.task_name,
        inputs=inputs or {},
        kwargs=kwargs or {},
        outputs=(node_id,),
        after=after,
        request=request_of(task),
    )


def chain() -> Dag:
    """``numbers`` feeds two tasks in parallel; ``doubled -> quadrupled`` is a chain;
    ``report`` runs once all of them are done."""
    return Dag(
        inputs=("numbers",),
        nodes=(
            node("square_sum", heavy_computation, inputs={"data": "numbers"}),
            node("distinct", memory_intensive, inputs={"data": "numbers"}),
            node("doubled", estimated_task, kwargs={"data": {"a": 1, "b": 2}}),
            node("quadrupled", estimated_task, inputs={"data": "doubled"}),
            node(
                "report",
                fetch_url,
                kwargs={"url": "https://example.org/report"},
                after=("square_sum", "distinct", "quadrupled"),
            ),
        ),
    )
