"""The CLI's plain-text tables, rendered from views without a cluster."""

from __future__ import annotations

from datetime import datetime

import pytest

from shared.wire.protocol import ErrorInfo
from shared.wire.runs import NodeView, RunView, WorkerView
from taskiq_fleet import GPUDevice, WorkerSpec
from taskiq_fleet.tables import (
    duration,
    node_change,
    nodes_table,
    placement_table,
    run_header,
    runs_table,
    table,
    timestamp,
    workers_table,
)

NOW = 1_700_000_100.0
T0 = 1_700_000_000.0


def test_table_aligns_columns_and_strips_trailing_space() -> None:
    assert table(["a", "bb"], [["xyz", ""], ["1", "2"]]).splitlines() == [
        "a    bb",
        "---  --",
        "xyz",
        "1    2",
    ]
    with pytest.raises(ValueError, match="2 columns"):
        table(["a", "b"], [["only one"]])


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.0123, "12ms"), (1.5, "1.50s"), (42.26, "42.3s"), (125, "2m05s"),
     (3 * 3600 + 120, "3h02m"), (-1, "0ms")],
)  # fmt: skip
def test_duration(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_timestamp_is_local_time() -> None:
    assert timestamp(T0) == datetime.fromtimestamp(T0).strftime("%Y-%m-%d %H:%M:%S")
    assert timestamp(0) == "-"


def worker(name: str, **fields: object) -> WorkerView:
    spec = WorkerSpec(
        name=name,
        cpu=8,
        ram_mb=16384,
        gpus=(GPUDevice(index=0, model="L4"), GPUDevice(index=1, model="L4")),
        labels={"zone": "a", "gpu": "true"},
    )
    return WorkerView.model_validate(
        {
            "spec": spec,
            "reserved": {"cpu": 2.5, "ram_mb": 4096.0},
            "free": {"cpu": 5.5, "ram_mb": 12288.0},
            "gpu_free": {0: 0.75, 1: 1.0},
            "last_seen": NOW - 1.25,
            "running": 3,
            **fields,
        }
    )


def test_workers_table() -> None:
    lines = workers_table([worker("w2", draining=True, reserved={}, free={}, gpu_free={}),
                           worker("w1")], NOW).splitlines()  # fmt: skip
    assert lines[0].split("  ")[0] == "worker"
    assert lines[2].split() == [
        "w1", "gpu=true,zone=a", "2.5/8", "5.5", "4096/16384", "12288",
        "0:L4", "0.75,1:L4", "1", "3", "healthy", "1.2s", "ago", "-",
    ]  # fmt: skip
    assert lines[3].split() == [
        "w2", "gpu=true,zone=a", "-/8", "-", "-/16384", "-", "0:L4", "-,1:L4", "-", "3",
        "draining", "1.2s", "ago", "-",
    ]  # fmt: skip


def node(node_id: str, status: str = "succeeded", **fields: object) -> NodeView:
    base: dict[str, object] = {"id": node_id, "task": "add", "status": status}
    if status in ("running", "succeeded", "failed"):
        base |= {"worker": "a1", "attempt": 1, "started_at": T0 + 1}
    if status in ("succeeded", "failed"):
        base["finished_at"] = T0 + 3.5
    return NodeView.model_validate(base | fields)


def run(status: str = "succeeded", **fields: object) -> RunView:
    nodes = (
        node("a", gpu_devices=(0, 1)),
        node("b", "failed", error=ErrorInfo(type="ValueError", message="boom")),
        node("c", "skipped", reason="skipped: upstream b failed"),
        node("d", "running"),
    )
    base: dict[str, object] = {"run_id": "r1", "name": "demo", "status": status,
                               "submitted_at": T0, "nodes": nodes}  # fmt: skip
    if status != "running":
        base["finished_at"] = T0 + 4
    return RunView.model_validate(base | fields)


def test_runs_table() -> None:
    lines = runs_table([run("failed"), run("running", run_id="r2", name="")], NOW).splitlines()
    assert lines[0].split() == ["run", "name", "status", "nodes", "done", "submitted", "duration"]
    when = timestamp(T0)
    assert lines[2] == f"r1   demo  failed   3/4         {when}  4.00s"
    assert lines[3] == f"r2   -     running  3/4         {when}  1m40s"


def test_run_header_and_node_table() -> None:
    view = run("failed", error="node b failed")
    assert run_header(view, NOW).splitlines() == [
        "run r1 (demo)",
        "  status:    failed",
        "  nodes:     3/4 done",
        f"  submitted: {timestamp(T0)}",
        "  duration:  4.00s",
        "  error:     node b failed",
    ]
    rows = [line.split("  ") for line in nodes_table(view, NOW).splitlines()]
    assert [[c.strip() for c in r if c.strip()] for r in rows[2:]] == [
        ["a", "add", "succeeded", "a1", "0,1", "1", "2.50s", "-"],
        ["b", "add", "failed", "a1", "-", "1", "2.50s", "ValueError: boom"],
        ["c", "add", "skipped", "-", "-", "0", "-", "skipped: upstream b failed"],
        ["d", "add", "running", "a1", "-", "1", "1m39s", "-"],
    ]


def test_placement_table() -> None:
    assert placement_table(run()).splitlines()[2:] == [
        "a     a1      0,1   2.50s",
        "b     a1      -     2.50s",
        "c     -       -     -",
        "d     a1      -     -",
    ]


def test_progress_lines() -> None:
    assert node_change(node("x", "running", gpu_devices=(1,))) == "  node x: running on a1 gpu 1"
    assert node_change(node("x", "placed", worker="a1", attempt=2)) == (
        "  node x: placed on a1 (attempt 2)"
    )
    assert node_change(node("x")) == "  node x: succeeded on a1 in 2.50s"
    failed = node("x", "failed", error=ErrorInfo(type="ValueError", message="boom"))
    assert node_change(failed) == "  node x: failed on a1 in 2.50s: ValueError: boom"
    assert node_change(node("x", "ready", reason="busy")) == "  node x: ready: busy"
    skipped = node("x", "skipped", reason="skipped: upstream b failed")
    assert node_change(skipped) == "  node x: skipped: upstream b failed"
