"""The CLI's plain-text tables, rendered from views without a cluster."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from shared.wire.protocol import ErrorInfo
from shared.wire.runs import NodeView, RunView, WorkerView
from taskiq_fleet import GPUDevice, WorkerSpec
from taskiq_fleet.tables import (
    duration,
    failures,
    node_change,
    nodes_table,
    placement_table,
    run_header,
    runs_table,
    status_text,
    table,
    timestamp,
    when,
    workers_table,
    workers_text,
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
    assert lines[:2] == [
        "worker  health    cpu used  ram MB used  gpus free         running  labels           "
        "cpu free  ram free  last seen",
        "------- --------- --------- ------------ ----------------- -------- ---------------- "
        "--------- --------- ---------",
    ]
    assert lines[2].split() == [
        "w1", "healthy", "2.5/8", "4096/16384", "0:L4=0.75", "1:L4=1", "3", "gpu=true",
        "zone=a", "5.5", "12288", "1.2s", "ago",
    ]  # fmt: skip
    assert lines[3].split() == [
        "w2", "draining", "-/8", "-/16384", "0:L4=-", "1:L4=-", "3", "gpu=true", "zone=a",
        "-", "-", "1.2s", "ago",
    ]  # fmt: skip


def test_workers_text_says_shared_labels_once() -> None:
    other = worker(
        "w2", spec=worker("w2").spec.model_copy(update={"labels": {"zone": "b", "gpu": "true"}})
    )
    text = workers_text([worker("w1"), other], [], NOW).splitlines()
    assert text[:2] == ["coordinators: (not reported)", "labels of every worker: gpu=true"]
    assert cells(text, "w1")[6] == "zone=a"
    assert cells(text, "w2")[6] == "zone=b"
    alone = workers_text([worker("w1")], [], NOW).splitlines()
    assert cells(alone, "w1")[6] == "gpu=true zone=a"
    assert workers_text([], [], NOW).splitlines()[1] == "no workers"


def test_a_worker_named_after_its_host_does_not_repeat_it() -> None:
    spec = worker("box").spec.model_copy(update={"labels": {"hostname": "box", "os": "linux"}})
    assert cells(workers_table([worker("box", spec=spec)], NOW).splitlines(), "box")[6] == (
        "os=linux"
    )


def test_no_gpu_column_without_gpus() -> None:
    spec = worker("c").spec.model_copy(update={"gpus": ()})
    header = workers_table([worker("c", spec=spec, gpu_free={})], NOW).splitlines()[0]
    assert "gpus" not in header
    assert "resources" not in header


def cells(lines: list[str], first: str) -> list[str]:
    row = next(line for line in lines if line.startswith(first + " "))
    return re.split(r"\s{2,}", row.strip())


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
    assert lines[0].split() == ["run", "name", "status", "done", "submitted", "duration"]
    at = when(T0, NOW)
    assert lines[2] == f"r1   demo  failed   3/4   {at}   4.00s"
    assert lines[3] == f"r2   -     running  3/4   {at}   1m40s"


def test_when_is_the_time_alone_today() -> None:
    today = datetime.fromtimestamp(T0)
    assert when(T0, T0 + 1) == today.strftime("%H:%M:%S")
    assert when(T0, T0 + 3 * 86400) == today.strftime("%Y-%m-%d %H:%M")
    assert when(0, NOW) == "-"


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
    no_gpus = run(nodes=(node("a"),))
    assert placement_table(no_gpus).splitlines() == [
        "node  worker  duration",
        "----- ------- --------",
        "a     a1      2.50s",
    ]


TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/tasks.py", line 12, in add\n'
    '    raise ValueError("boom")\n'
    "ValueError: boom\n"
)


def test_status_shows_a_failed_nodes_error_and_traceback() -> None:
    error = ErrorInfo(type="ValueError", message="boom\nsecond line", traceback=TRACEBACK)
    view = run("failed", error="node b failed", nodes=(
        node("a"), node("b", "failed", error=error, attempt=2)))  # fmt: skip
    text = status_text(view, NOW)
    assert "ValueError: boom\n" not in text.split("\n\n")[1]  # the table: first line only
    assert text.split("\n\n")[-1].splitlines() == [
        "node b failed (attempt 2 on a1): ValueError: boom",
        "second line",
        "  Traceback (most recent call last):",
        '    File "/srv/app/tasks.py", line 12, in add',
        '      raise ValueError("boom")',
        "  ValueError: boom",
    ]
    assert failures(run("succeeded", nodes=(node("a"),))) == ""
    no_trace = run("failed", nodes=(node("b", "failed", error=ErrorInfo(type="Rejected")),))
    assert failures(no_trace) == "node b failed (attempt 1 on a1): Rejected"


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


def test_no_gpu_or_reason_column_when_no_node_has_one() -> None:
    header = nodes_table(run("succeeded", nodes=(node("a"),)), NOW).splitlines()[0]
    assert header.split() == ["node", "task", "status", "worker", "attempt", "duration"]
