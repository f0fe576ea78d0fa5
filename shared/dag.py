"""The DAG a client submits: nodes, how values flow between them, and the run's settings.

Values flow by *name*, as in the documents' dataflow pipelines: a node publishes
its result under ``outputs`` and another takes it as a keyword argument through
``inputs`` (parameter -> output or external input name). ``after`` orders nodes
without passing data. Every check that can be made without the cluster is made
here, at construction, so a bad DAG is refused at the client with a message
naming the node, and is never half scheduled.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from shared.resources import ResourceRequest
from shared.wire import label_keys
from shared.wire.parts import PayloadRef
from shared.wire.protocol import Part, Token
from shared.wire.values import Value

OnError = Literal["stop", "continue"]


class RetryPolicy(Part):
    """Application-error retries; lost workers are retried apart, from the system budget.

    The n-th retry waits ``delay * backoff**(n-1)`` capped at ``max_delay``, then moved by
    up to ``jitter`` of itself either way, so retries of a fan-out do not arrive together.
    """

    max_retries: int = Field(default=0, ge=0)
    delay: float = Field(default=0.0, ge=0)
    backoff: float = Field(default=1.0, ge=1)
    max_delay: float = Field(default=300.0, ge=0)
    jitter: float = Field(default=0.0, ge=0, le=1)
    retry_on: tuple[str, ...] = ()
    """Error type names worth a retry; empty means any failure or timeout."""

    def delay_for(self, retry: int, draw: float = 0.5) -> float:
        """Seconds before retry number ``retry`` (1-based); ``draw`` is uniform in [0, 1)."""
        base = min(self.max_delay, self.delay * self.backoff ** max(0, retry - 1))
        return max(0.0, base * (1 + self.jitter * (2 * draw - 1)))

    @classmethod
    def from_labels(cls, labels: Mapping[str, Any]) -> RetryPolicy | None:
        """A task's own policy, from ``@broker.task(retry_policy={...})`` or
        ``max_retries=N``; ``None`` when it declares neither. A kiq's message carries label
        values as text (a dict as its Python repr), so text is read too."""
        policy = labels.get(label_keys.RETRY_POLICY)
        if isinstance(policy, str) and policy not in ("", "None"):
            policy = _literal(policy, "retry_policy")
        if isinstance(policy, Mapping):
            return cls.model_validate(policy)
        count = labels.get(label_keys.MAX_RETRIES)
        if count is None or count == "None":
            return None
        try:
            return cls(max_retries=int(count))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"max_retries must be a whole number, got {count!r}") from exc

    def retries(self, error_type: str | None) -> bool:
        if not self.retry_on or error_type is None:
            return True
        short = error_type.rsplit(".", 1)[-1]
        return error_type in self.retry_on or short in self.retry_on


def _literal(text: str, label: str) -> Any:
    """A label value taskiq turned into text: JSON, or the repr of a dict/number."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"label {label!r} is not a dict: {text[:80]!r}") from exc


def timeout_from_labels(labels: Mapping[str, Any]) -> float | None:
    """``@broker.task(timeout=30)``: seconds, when positive (0 or less: none); text is
    read too."""
    value = labels.get(label_keys.TIMEOUT)
    if value is None or value == "None":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"timeout must be a number of seconds, got {value!r}") from None
    return seconds if seconds > 0 else None


PRIORITY_WORDS = {"high": 10, "normal": 0, "low": -10}


def priority_from_labels(labels: Mapping[str, Any]) -> int:
    """``@broker.task(priority=5)`` or ``labels={"priority": "high"}`` (Tasks guide §3.1):
    higher runs first when nodes wait for room; ``high``/``normal``/``low`` are 10/0/-10."""
    value = labels.get(label_keys.PRIORITY)
    if value is None or value == "None":
        return 0
    if isinstance(value, str) and value.strip().lower() in PRIORITY_WORDS:
        return PRIORITY_WORDS[value.strip().lower()]
    try:
        return int(value)
    except (TypeError, ValueError):
        words = "/".join(PRIORITY_WORDS)
        raise ValueError(f"priority must be a whole number or {words}, got {value!r}") from None


class Batching(Part):
    """The node is one member of a batch (``@broker.task(batch=True, ...)``): the
    coordinator holds it with the other waiting members of its task and other arguments,
    from every producer, and runs up to ``size`` of them as one node, at the latest
    ``timeout`` seconds after the first arrived. The item is the node's first positional
    argument, or its keyword argument ``item``; the batch node gets their list there."""

    size: int = Field(default=100, ge=1)
    timeout: float = Field(default=3.0, gt=0)
    item: str | None = Field(default=None, min_length=1)


class Node(Part):
    id: Token
    task: str = Field(min_length=1)
    args: tuple[Value, ...] = ()
    kwargs: dict[str, Value] = Field(default_factory=dict)
    inputs: dict[str, str | tuple[str, ...]] = Field(default_factory=dict)
    """Keyword parameter -> name of an upstream output or of an external input, or a
    tuple of names: the parameter then receives the list of their values (a map's results)."""
    outputs: tuple[str, ...] = ()
    """Names the result is published under; with several, the result is unpacked."""
    after: tuple[Token, ...] = ()
    request: ResourceRequest = ResourceRequest()
    retry: RetryPolicy = RetryPolicy()
    timeout: float | None = Field(default=None, gt=0)
    priority: int = 0
    labels: dict[str, Value] = Field(default_factory=dict)
    batch: Batching | None = None
    arg_refs: dict[str, PayloadRef] = Field(default_factory=dict)
    """Arguments stored apart, in the payload stream, by position (``"0"``) or keyword;
    the inline value is a placeholder (``None``) and the agent fetches the value before
    the task runs. ``kiq`` puts an argument over the inline limit there: one larger than
    a NATS message could not be sent otherwise."""

    def input_names(self) -> list[tuple[str, str]]:
        """(parameter, name) for every name an input refers to, lists flattened."""
        return [
            (param, name)
            for param, names in self.inputs.items()
            for name in ((names,) if isinstance(names, str) else names)
        ]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        both = sorted(set(self.inputs) & set(self.kwargs))
        if both:
            raise ValueError(f"node {self.id!r}: {both} given both as kwargs and as inputs")
        if len(set(self.outputs)) != len(self.outputs):
            raise ValueError(f"node {self.id!r} names an output twice: {list(self.outputs)}")
        if self.batch is not None:
            self._check_batch(self.batch)
        if self.arg_refs:
            self._check_refs()
        return self

    def _check_refs(self) -> None:
        if self.batch is not None:
            raise ValueError(f"node {self.id!r}: a batch member's arguments travel inline")
        for key in self.arg_refs:
            named = int(key) < len(self.args) if key.isdecimal() else key in self.kwargs
            if not named:
                raise ValueError(
                    f"node {self.id!r}: arg_refs names {key!r}, neither an argument's "
                    "position nor one of its kwargs"
                )

    def _check_batch(self, batch: Batching) -> None:
        if self.inputs:
            raise ValueError(f"node {self.id!r}: a batch member takes values, not inputs")
        if batch.item is None and not self.args:
            raise ValueError(f"node {self.id!r}: a batch member needs its item as its first arg")
        if batch.item is not None and batch.item not in self.kwargs:
            raise ValueError(f"node {self.id!r}: a batch member has no kwarg {batch.item!r}")


class Dag(Part):
    nodes: tuple[Node, ...] = Field(min_length=1)
    inputs: tuple[str, ...] = ()
    """External inputs the submission must give values for."""

    @model_validator(mode="after")
    def _well_formed(self) -> Self:
        problems = self._naming_problems()
        if problems:
            raise ValueError("; ".join(problems))
        cycle = self._cycle()
        if cycle:
            raise ValueError(f"the DAG has a cycle: {' -> '.join(cycle)}")
        return self

    def _naming_problems(self) -> list[str]:
        problems: list[str] = []
        ids: set[str] = set()
        for node in self.nodes:
            if node.id in ids:
                problems.append(f"node id {node.id!r} is used twice")
            ids.add(node.id)
        producers: dict[str, str] = {name: "<input>" for name in self.inputs}
        if len(producers) != len(self.inputs):
            problems.append(f"external inputs named twice: {list(self.inputs)}")
        for node in self.nodes:
            for name in node.outputs:
                other = producers.setdefault(name, node.id)
                if other != node.id:
                    by = "an external input" if other == "<input>" else f"node {other!r}"
                    problems.append(f"output {name!r} of node {node.id!r} is also produced by {by}")
        for node in self.nodes:
            problems += [
                f"node {node.id!r} takes {param}={name!r}, which no node produces "
                "and which is not an external input"
                for param, name in node.input_names()
                if name not in producers
            ]
            problems += [
                f"node {node.id!r} runs after unknown node {a!r}"
                for a in node.after
                if a not in ids
            ]
        return problems

    @cached_property
    def by_id(self) -> dict[str, Node]:
        return {n.id: n for n in self.nodes}

    @cached_property
    def position(self) -> dict[str, int]:
        """Node id -> its place in ``nodes``: what changed together is told in this order."""
        return {n.id: i for i, n in enumerate(self.nodes)}

    @cached_property
    def producers(self) -> dict[str, str]:
        """Output name -> id of the node producing it."""
        return {name: n.id for n in self.nodes for name in n.outputs}

    @cached_property
    def upstream(self) -> dict[str, tuple[str, ...]]:
        """Node id -> ids it waits for (data and ordering), without duplicates."""
        found: dict[str, tuple[str, ...]] = {}
        for node in self.nodes:
            deps = [self.producers[s] for _, s in node.input_names() if s in self.producers]
            found[node.id] = tuple(dict.fromkeys([*deps, *node.after]))
        return found

    @cached_property
    def downstream(self) -> dict[str, tuple[str, ...]]:
        found: dict[str, list[str]] = {n.id: [] for n in self.nodes}
        for node_id, deps in self.upstream.items():
            for dep in deps:
                found[dep].append(node_id)
        return {k: tuple(v) for k, v in found.items()}

    @cached_property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """Every dependency as (upstream, downstream): the DAG a run's view draws."""
        return tuple((dep, node_id) for node_id, deps in self.upstream.items() for dep in deps)

    def levels(self) -> list[list[str]]:
        """Execution levels: every node comes after all it waits for (Kahn's algorithm)."""
        waiting = {n: len(d) for n, d in self.upstream.items()}
        level = [n.id for n in self.nodes if waiting[n.id] == 0]
        result: list[list[str]] = []
        while level:
            result.append(level)
            following: list[str] = []
            for node_id in level:
                for nxt in self.downstream[node_id]:
                    waiting[nxt] -= 1
                    if waiting[nxt] == 0:
                        following.append(nxt)
            level = following
        return result

    def _cycle(self) -> list[str]:
        """One cycle as a path of node ids, or [] when acyclic (iterative DFS)."""
        colour: dict[str, int] = {}
        upstream = self.upstream
        for start in upstream:
            if colour.get(start):
                continue
            stack: list[tuple[str, Iterator[str]]] = [(start, iter(upstream[start]))]
            colour[start] = 1
            while stack:
                node_id, deps = stack[-1]
                dep = next(deps, None)
                if dep is None:
                    colour[node_id] = 2
                    stack.pop()
                elif colour.get(dep) == 1:
                    path = [n for n, _ in stack]
                    return [*path[path.index(dep) :], dep][::-1]
                elif not colour.get(dep):
                    colour[dep] = 1
                    stack.append((dep, iter(upstream[dep])))
        return []


class RunOptions(Part):
    max_parallel: int | None = Field(default=None, ge=1)
    on_error: OnError = "stop"
    timeout: float | None = Field(default=None, gt=0)
    priority: int = 0


def check_inputs(dag: Dag, given: set[str]) -> None:
    """Every external input given, nothing unknown: raise ValueError naming them."""
    missing = [name for name in dag.inputs if name not in given]
    unknown = sorted(given - set(dag.inputs))
    problems = []
    if missing:
        problems.append(f"missing external input(s) {missing}")
    if unknown:
        problems.append(f"unknown input(s) {unknown}; the DAG takes {list(dag.inputs)}")
    if problems:
        raise ValueError("; ".join(problems))
