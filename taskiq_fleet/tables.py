"""Plain-text rendering of the views ``fleet workers/runs/status/submit`` print.

Every function here is pure: views (and the current time, where ages and
running durations depend on it, and the terminal's width) in, text out, so the
output can be tested without a cluster or a terminal. Times are shown in local
time, durations compactly. The tables fit the width given (``fit.py``);
``table`` is the plain one ``fleet up`` and the demo print.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import MappingProxyType

from shared.wire.runs import TERMINAL_NODE, CoordinatorView, NodeView, RunView, WorkerView
from taskiq_fleet.fit import Column, fit_table

NONE = "-"
NO_LABELS: Mapping[str, str] = MappingProxyType({})


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, a dashed rule under the header."""
    body = [list(map(str, row)) for row in rows]
    widths = [len(h) for h in header]
    for row in body:
        if len(row) != len(header):
            raise ValueError(f"row {row} has {len(row)} cells for {len(header)} columns")
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [list(header), ["-" * w for w in widths], *body]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def number(value: float) -> str:
    """3 -> '3', 0.5 -> '0.5', 1.23456 -> '1.235' (amounts have at most 3 decimals)."""
    return f"{round(value, 3):g}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def timestamp(epoch: float | None) -> str:
    if not epoch:
        return NONE
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def when(epoch: float | None, now: float) -> str:
    """A table's timestamp: the time alone when it is today (local time), else the date and
    the minute."""
    if not epoch:
        return NONE
    moment = datetime.fromtimestamp(epoch)
    if moment.date() == datetime.fromtimestamp(now).date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


def ago(epoch: float, now: float) -> str:
    return f"{max(0.0, now - epoch):.1f}s ago" if epoch else NONE


def labels(values: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(values.items())) or NONE


def spaced(values: Mapping[str, str]) -> str:
    """Labels with a space between, where a table cell may wrap: ``os=linux zone=a``."""
    return " ".join(f"{k}={v}" for k, v in sorted(values.items())) or NONE


def devices(indexes: Sequence[int]) -> str:
    return ",".join(map(str, indexes)) or NONE


# -- workers -----------------------------------------------------------------------------------


def _gpus(worker: WorkerView) -> str:
    """``0:L4=0.75 1:L4=1``: each device's index, model and free share."""
    cells = []
    for gpu in worker.spec.gpus:
        free = worker.gpu_free.get(gpu.index)
        cells.append(f"{gpu.index}:{gpu.model}={NONE if free is None else number(free)}")
    return " ".join(cells) or NONE


def amounts(values: dict[str, float]) -> str:
    """Custom resources as ``--resources`` takes them: ``fpga=1,licenses=2``."""
    return ",".join(f"{k}={number(v)}" for k, v in sorted(values.items())) or NONE


def _custom(worker: WorkerView) -> str:
    """``licenses=1/2``: reserved (``-`` while draining) of each custom resource's total."""
    reserved = worker.reserved
    cells = [
        f"{k}={number(reserved[k]) if k in reserved else NONE}/{number(total)}"
        for k, total in sorted(worker.spec.resources.items())
    ]
    return ",".join(cells) or NONE


def health(worker: WorkerView) -> str:
    if worker.draining:
        return "draining"
    return "healthy" if worker.healthy else "unhealthy"


def common_labels(workers: Sequence[WorkerView]) -> dict[str, str]:
    """The labels every one of two or more workers has alike (``os=linux``): said once
    above the table instead of on every row."""
    if len(workers) < 2:
        return {}
    first, *others = (w.spec.labels for w in workers)
    return {k: v for k, v in first.items() if all(o.get(k) == v for o in others)}


def worker_row(worker: WorkerView, now: float, hide: Mapping[str, str] = NO_LABELS) -> list[str]:
    spec, reserved, free = worker.spec, worker.reserved, worker.free

    def used(key: str, total: float) -> str:
        return f"{number(reserved[key]) if key in reserved else NONE}/{number(total)}"

    def left(key: str) -> str:
        return number(free[key]) if key in free else NONE

    # A worker named after its host (the default) need not repeat its hostname label.
    shown = {
        k: v for k, v in spec.labels.items() if k not in hide and (k, v) != ("hostname", spec.name)
    }
    return [
        spec.name,
        health(worker),
        used("cpu", spec.cpu),
        used("ram_mb", spec.ram_mb),
        _gpus(worker),
        str(worker.running),
        spaced(shown),
        left("cpu"),
        left("ram_mb"),
        ago(worker.last_seen, now),
        _custom(worker),
    ]


WORKER_COLUMNS = (
    Column("worker"),
    Column("health"),
    Column("cpu used", 95),
    Column("ram MB used", 95),
    Column("gpus free", 90, wrap=True, fold=16),
    Column("running", 85),
    Column("labels", 80, wrap=True, fold=16),
    Column("cpu free", 40),
    Column("ram free", 40),
    Column("last seen", 30),
    Column("resources used/total", 75, wrap=True, fold=16),
)
"""In the order shown; on a narrow terminal the lowest ``keep`` go first."""
_GPUS, _RESOURCES = 4, 10


def coordinators_line(coordinators: Iterable[CoordinatorView]) -> str:
    """``coordinators: host:41 (leader, term 3), other:77 (standby)``."""
    parts = [
        f"{c.name} (leader, term {c.term})" if c.role == "leader" else f"{c.name} (standby)"
        for c in coordinators
    ]
    return "coordinators: " + (", ".join(parts) or "(not reported)")


def workers_table(
    workers: Iterable[WorkerView],
    now: float,
    width: int | None = None,
    hide: Mapping[str, str] = NO_LABELS,
) -> str:
    """One row per worker; labels in ``hide`` are left out, and so are the GPU and the
    custom resource columns when no worker has any."""
    ordered = sorted(workers, key=lambda w: w.spec.name)
    rows = [worker_row(w, now, hide) for w in ordered]
    skip = {
        i for i, has in ((_GPUS, "gpus"), (_RESOURCES, "resources"))
        if not any(getattr(w.spec, has) for w in ordered)
    }  # fmt: skip
    return fit_table(
        [c for i, c in enumerate(WORKER_COLUMNS) if i not in skip],
        ([cell for i, cell in enumerate(row) if i not in skip] for row in rows),
        width,
    )


def workers_text(
    workers: Sequence[WorkerView],
    coordinators: Iterable[CoordinatorView],
    now: float,
    width: int | None = None,
) -> str:
    """What ``fleet workers`` prints: the coordinators, the labels all workers share, the
    table."""
    lines = [coordinators_line(coordinators)]
    common = common_labels(workers)
    if common:
        lines.append("labels of every worker: " + spaced(common))
    lines.append(workers_table(workers, now, width, common) if workers else "no workers")
    return "\n".join(lines)


# -- runs --------------------------------------------------------------------------------------


def nodes_done(run: RunView) -> str:
    done = sum(node.status in TERMINAL_NODE for node in run.nodes)
    return f"{done}/{len(run.nodes)}"


def run_duration(run: RunView, now: float) -> float | None:
    if not run.submitted_at:
        return None
    return (run.finished_at or now) - run.submitted_at


RUN_COLUMNS = (
    Column("run"),
    Column("name", 60, wrap=True, fold=12),
    Column("status"),
    Column("done", 90),
    Column("submitted", 50),
    Column("duration", 80),
)


def runs_table(runs: Iterable[RunView], now: float, width: int | None = None) -> str:
    rows = [
        [
            run.run_id,
            run.name or NONE,
            run.status,
            nodes_done(run),
            when(run.submitted_at, now),
            duration(run_duration(run, now)),
        ]
        for run in runs
    ]
    return fit_table(RUN_COLUMNS, rows, width)


def run_header(run: RunView, now: float) -> str:
    lines = [
        f"run {run.run_id}" + (f" ({run.name})" if run.name else ""),
        f"  status:    {run.status}",
        f"  nodes:     {nodes_done(run)} done",
        f"  submitted: {timestamp(run.submitted_at)}",
        f"  duration:  {duration(run_duration(run, now))}",
    ]
    if run.error:
        lines.append(f"  error:     {run.error}")
    return "\n".join(lines)


def node_duration(node: NodeView, now: float) -> float | None:
    """Finished: how long it ran; running: how long so far."""
    if node.started_at is None:
        return None
    return (node.finished_at or now) - node.started_at


def node_problem(node: NodeView) -> str:
    """The reason and the error's type and first line, for a table cell or a progress line
    (the whole message and the traceback are in ``failures``)."""
    if node.error is not None:
        first = node.error.message.strip().split("\n", 1)[0]
        text = f"{node.error.type}: {first}" if first else node.error.type
        return f"{node.reason}: {text}" if node.reason else text
    return node.reason


def node_row(node: NodeView, now: float) -> list[str]:
    return [
        node.id,
        node.task,
        node.status,
        node.worker or NONE,
        devices(node.gpu_devices),
        str(node.attempt),
        duration(node_duration(node, now)),
        node_problem(node) or NONE,
    ]


NODE_COLUMNS = (
    Column("node"),
    Column("task", 70, wrap=True, fold=16),
    Column("status"),
    Column("worker", 90),
    Column("gpus", 85),
    Column("attempt", 60),
    Column("duration", 80),
    Column("reason/error", wrap=True, fold=16, least=30),
)
_NODE_GPUS, _NODE_PROBLEM = 4, 7


def _empty_node_columns(run: RunView) -> set[int]:
    gpus = any(n.gpu_devices for n in run.nodes)
    problems = any(node_problem(n) for n in run.nodes)
    return {i for i, shown in ((_NODE_GPUS, gpus), (_NODE_PROBLEM, problems)) if not shown}


def nodes_table(run: RunView, now: float, width: int | None = None) -> str:
    """One row per node; no GPU column when no node got a device, nor a reason/error one
    when no node has either."""
    skip = _empty_node_columns(run)
    return fit_table(
        [c for i, c in enumerate(NODE_COLUMNS) if i not in skip],
        ([c for i, c in enumerate(node_row(n, now)) if i not in skip] for n in run.nodes),
        width,
    )


def failures(run: RunView) -> str:
    """Each failed node's whole error: where it ran, the message, the task's traceback."""
    blocks = []
    for node in run.nodes:
        error = node.error
        if node.status != "failed" or error is None:
            continue
        where = f"attempt {node.attempt}" + (f" on {node.worker}" if node.worker else "")
        head = f"node {node.id} failed ({where}): {error.type}"
        message = error.message.strip()
        text = f"{head}: {message}" if message else head
        if error.traceback.strip():
            text += "\n" + textwrap.indent(error.traceback.rstrip(), "  ")
        blocks.append(text)
    return "\n\n".join(blocks)


def status_text(run: RunView, now: float, width: int | None = None) -> str:
    parts = [run_header(run, now), nodes_table(run, now, width), failures(run)]
    return "\n\n".join(p for p in parts if p)


def placement_table(run: RunView, width: int | None = None) -> str:
    gpus = any(n.gpu_devices for n in run.nodes)
    rows = [
        [node.id, node.worker or NONE, *([devices(node.gpu_devices)] * gpus),
         duration(node.duration)]
        for node in run.nodes
    ]  # fmt: skip
    columns = [Column("node"), Column("worker"), *([Column("gpus")] * gpus), Column("duration")]
    return fit_table(columns, rows, width)


def node_change(node: NodeView) -> str:
    """One progress line for a node that changed status, e.g. ``  node x: running on a1``."""
    line = f"  node {node.id}: {node.status}"
    if node.worker and node.status in ("placed", "running", "succeeded", "failed"):
        line += f" on {node.worker}"
        if node.gpu_devices:
            line += f" gpu {devices(node.gpu_devices)}"
    if node.attempt > 1 and node.status in ("placed", "running"):
        line += f" (attempt {node.attempt})"
    if node.status in ("succeeded", "failed") and node.duration is not None:
        line += f" in {duration(node.duration)}"
    problem = node_problem(node).removeprefix(f"{node.status}: ")
    return f"{line}: {problem}" if problem else line
