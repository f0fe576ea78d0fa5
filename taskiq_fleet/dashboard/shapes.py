"""What the dashboard's pages show, as JSON: pure functions of the wire models.

A worker row is built from either source the dashboard has: the coordinator's answer to
``workers`` (its pool's books) or an agent's heartbeat (the agent's own ledger, and its
live usage), which say the same in steady state; the heartbeat is what keeps the page
live between answers. Runs are ``RunView``s, whoever sent them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from shared.resources import WorkerSpec
from shared.wire.label_keys import WORKER_TASKS
from shared.wire.protocol import Heartbeat
from shared.wire.runs import NodeView, RunView, WorkerView

Json = dict[str, Any]
PREVIEW = 400
"""Characters of an output value shown on a run's page."""
DEFAULT_INTERVAL = 2.0
"""Heartbeat interval assumed for a worker no heartbeat has been heard from yet."""


def worker_row(
    spec: WorkerSpec,
    reserved: Mapping[str, float],
    gpu_reserved: Mapping[int, float],
    live: Json,
) -> Json:
    """One worker: capacity and reserved per dimension, each GPU device's reserved share,
    labels (without the fleet's own), and ``live`` (usage, health, last seen)."""
    dims = [
        {"name": "cpu", "total": spec.cpu, "reserved": reserved.get("cpu", 0.0)},
        {"name": "ram_mb", "total": spec.ram_mb, "reserved": reserved.get("ram_mb", 0.0)},
    ]
    dims += [
        {"name": name, "total": total, "reserved": reserved.get(name, 0.0)}
        for name, total in sorted(spec.resources.items())
    ]
    gpus = [
        {
            "index": g.index,
            "model": g.model,
            "memory_mb": g.memory_mb,
            "reserved": round(gpu_reserved.get(g.index, 0.0), 3),
        }
        for g in spec.gpus
    ]
    labels = {k: v for k, v in sorted(spec.labels.items()) if k != WORKER_TASKS}
    return {"name": spec.name, "labels": labels, "dims": dims, "gpus": gpus, **live}


def row_of_view(view: WorkerView, interval: float = DEFAULT_INTERVAL) -> Json:
    """A row from the coordinator's books (``fleet workers``)."""
    gpu_reserved = {index: 1.0 - free for index, free in view.gpu_free.items()}
    live = {
        "draining": view.draining,
        "running": view.running,
        "cpu_percent": view.cpu_percent,
        "available_ram_mb": view.available_ram_mb,
        "last_seen": view.last_seen,
        "interval": interval,
    }
    return worker_row(view.spec, view.reserved, gpu_reserved, live)


def row_of_heartbeat(beat: Heartbeat, now: float) -> Json:
    """A row from an agent's heartbeat, heard at ``now``."""
    held = beat.reserved
    reserved = {"cpu": held.cpu, "ram_mb": float(held.ram_mb), **held.resources}
    live = {
        "draining": beat.draining,
        "running": len(beat.running),
        "cpu_percent": beat.cpu_percent,
        "available_ram_mb": beat.available_ram_mb,
        "last_seen": now,
        "interval": beat.interval,
    }
    return worker_row(beat.capacity, reserved, held.gpus, live)


def counts(nodes: Iterable[NodeView]) -> dict[str, int]:
    return dict(Counter(n.status for n in nodes))


def run_summary(view: RunView) -> Json:
    """A row of the runs page."""
    return {
        "run_id": view.run_id,
        "name": view.name,
        "status": view.status,
        "submitted_at": view.submitted_at,
        "finished_at": view.finished_at,
        "nodes": counts(view.nodes),
        "total": len(view.nodes),
        "error": view.error,
    }


def node_json(node: NodeView) -> Json:
    found = node.model_dump(mode="json")
    found["duration"] = node.duration
    return found


def run_detail(view: RunView) -> Json:
    """A run's page: its summary, every node, the DAG's edges and each node's level (its
    longest distance from a node that waits for nothing), and a preview of the outputs."""
    return {
        **run_summary(view),
        "nodes": [node_json(n) for n in view.nodes],
        "edges": [list(edge) for edge in view.edges],
        "levels": levels([n.id for n in view.nodes], view.edges),
        "outputs": {k: _preview(v) for k, v in view.outputs.items()},
        "output_refs": sorted(view.output_refs),
    }


def levels(nodes: list[str], edges: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Node id -> column in the drawing: one more than the deepest node it waits for."""
    upstream: dict[str, list[str]] = {n: [] for n in nodes}
    for before, after in edges:
        if before in upstream and after in upstream:
            upstream[after].append(before)
    found: dict[str, int] = {}
    for node in nodes:
        _level(node, upstream, found)
    return found


def _level(node: str, upstream: dict[str, list[str]], found: dict[str, int]) -> int:
    """Iterative depth-first: a DAG of thousands of nodes in a chain must not recurse."""
    stack = [node]
    while stack:
        current = stack[-1]
        if current in found:
            stack.pop()
            continue
        todo = [u for u in upstream[current] if u not in found]
        if todo:
            stack.extend(todo)
            continue
        found[current] = 1 + max((found[u] for u in upstream[current]), default=-1)
        stack.pop()
    return found[node]


def _preview(value: object) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= PREVIEW else text[:PREVIEW] + "..."


def waiting(views: Iterable[RunView]) -> Json:
    """Why work waits: every ready node of a running run with the pool's last answer to it
    (``busy ...``, ``infeasible: ...``, or none yet: ``queued``), and how many nodes wait
    only for what comes before them."""
    rows: list[Json] = []
    upstream = 0
    for view in views:
        if view.status != "running":
            continue
        for node in view.nodes:
            if node.status == "pending" and not node.reason:
                upstream += 1
            elif node.status in ("ready", "pending"):
                rows.append(_waiting_row(view, node))
    return {"nodes": rows, "upstream": upstream}


def _waiting_row(view: RunView, node: NodeView) -> Json:
    word = node.reason.split(" ", 1)[0].rstrip(":")
    why = word if word in ("busy", "infeasible") else "queued"
    return {
        "run_id": view.run_id,
        "run_name": view.name,
        "node": node.id,
        "task": node.task,
        "status": node.status,
        "why": why,
        "reason": node.reason,
        "system_retries": node.system_retries,
    }
