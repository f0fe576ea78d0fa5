"""Plain-text rendering of the views ``fleet workers/runs/status/submit`` print.

Every function here is pure: views (and the current time, where ages and
running durations depend on it) in, text out, so the output can be tested
without a cluster. Times are shown in local time, durations compactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from shared.wire.runs import TERMINAL_NODE, CoordinatorView, NodeView, RunView, WorkerView

NONE = "-"


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


def ago(epoch: float, now: float) -> str:
    return f"{max(0.0, now - epoch):.1f}s ago" if epoch else NONE


def labels(values: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(values.items())) or NONE


def devices(indexes: Sequence[int]) -> str:
    return ",".join(map(str, indexes)) or NONE


# -- workers -----------------------------------------------------------------------------------


def _gpus(worker: WorkerView) -> str:
    cells = []
    for gpu in worker.spec.gpus:
        free = worker.gpu_free.get(gpu.index)
        cells.append(f"{gpu.index}:{gpu.model} {NONE if free is None else number(free)}")
    return ",".join(cells) or NONE


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


def worker_row(worker: WorkerView, now: float) -> list[str]:
    spec, reserved, free = worker.spec, worker.reserved, worker.free

    def used(key: str, total: float) -> str:
        return f"{number(reserved[key]) if key in reserved else NONE}/{number(total)}"

    def left(key: str) -> str:
        return number(free[key]) if key in free else NONE

    return [
        spec.name,
        labels(spec.labels),
        used("cpu", spec.cpu),
        left("cpu"),
        used("ram_mb", spec.ram_mb),
        left("ram_mb"),
        _gpus(worker),
        str(worker.running),
        health(worker),
        ago(worker.last_seen, now),
        _custom(worker),
    ]


WORKER_HEADER = (
    "worker", "labels", "cpu used/total", "cpu free", "ram MB used/total", "ram MB free",
    "gpus (index:model free)", "running", "health", "last seen", "resources used/total",
)  # fmt: skip


def coordinators_line(coordinators: Iterable[CoordinatorView]) -> str:
    """``coordinators: host:41 (leader, term 3), other:77 (standby)``."""
    parts = [
        f"{c.name} (leader, term {c.term})" if c.role == "leader" else f"{c.name} (standby)"
        for c in coordinators
    ]
    return "coordinators: " + (", ".join(parts) or "(not reported)")


def workers_table(workers: Iterable[WorkerView], now: float) -> str:
    ordered = sorted(workers, key=lambda w: w.spec.name)
    return table(WORKER_HEADER, (worker_row(w, now) for w in ordered))


# -- runs --------------------------------------------------------------------------------------


def nodes_done(run: RunView) -> str:
    done = sum(node.status in TERMINAL_NODE for node in run.nodes)
    return f"{done}/{len(run.nodes)}"


def run_duration(run: RunView, now: float) -> float | None:
    if not run.submitted_at:
        return None
    return (run.finished_at or now) - run.submitted_at


def runs_table(runs: Iterable[RunView], now: float) -> str:
    rows = [
        [
            run.run_id,
            run.name or NONE,
            run.status,
            nodes_done(run),
            timestamp(run.submitted_at),
            duration(run_duration(run, now)),
        ]
        for run in runs
    ]
    return table(("run", "name", "status", "nodes done", "submitted", "duration"), rows)


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
    if node.error is not None:
        text = f"{node.error.type}: {node.error.message}" if node.error.message else node.error.type
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


NODE_HEADER = ("node", "task", "status", "worker", "gpus", "attempt", "duration", "reason/error")


def nodes_table(run: RunView, now: float) -> str:
    return table(NODE_HEADER, (node_row(n, now) for n in run.nodes))


def status_text(run: RunView, now: float) -> str:
    return f"{run_header(run, now)}\n\n{nodes_table(run, now)}"


def placement_table(run: RunView) -> str:
    rows = [
        [node.id, node.worker or NONE, devices(node.gpu_devices), duration(node.duration)]
        for node in run.nodes
    ]
    return table(("node", "worker", "gpus", "duration"), rows)


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
