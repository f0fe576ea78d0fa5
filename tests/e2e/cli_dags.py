"""DAGs the CLI tests submit with ``fleet submit tests.e2e.cli_dags:...`` (tasks of
``tests/e2e/agent_tasks.py``)."""

from __future__ import annotations

from taskiq_fleet import Dag, Node

LIGHT = {"cpu": 0.1}

chain = Dag(
    inputs=("x",),
    nodes=(
        Node(id="first", task="add", kwargs={"b": 1}, inputs={"a": "x"}, outputs=("y",),
             request=LIGHT),
        Node(id="second", task="add", kwargs={"b": 10}, inputs={"a": "y"}, outputs=("z",),
             request=LIGHT),
    ),
)  # fmt: skip
"""x -> first: x + 1 = y -> second: y + 10 = z."""


def failing() -> Dag:
    return Dag(nodes=(Node(id="boom", task="fail", args=("it broke",), request=LIGHT),))


def sleeper() -> Dag:
    return Dag(nodes=(Node(id="nap", task="sleep_for", args=(60,), request=LIGHT),))


not_a_dag = 42
