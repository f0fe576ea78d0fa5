"""Tables that fit the terminal: 80, 100 and 180 columns, and no limit for a pipe."""

from __future__ import annotations

import re

import pytest

from shared.wire.protocol import ErrorInfo
from shared.wire.runs import CoordinatorView, NodeView, RunView, WorkerView
from taskiq_fleet import GPUDevice, WorkerSpec
from taskiq_fleet.fit import Column, fit_table, output_width
from taskiq_fleet.tables import runs_table, status_text, workers_text

NOW = 1_700_000_100.0
RUN_ID = "0123456789abcdef0123456789abcdef"


def worker(name: str, gpus: int, **labels: str) -> WorkerView:
    spec = WorkerSpec(
        name=name,
        cpu=64,
        ram_mb=515_000,
        gpus=tuple(GPUDevice(index=i, model="H100-SXM5-80GB") for i in range(gpus)),
        labels={"hostname": name, "os": "linux", "arch": "x86_64", **labels},
        resources={"licenses": 4} if gpus else {},
    )
    return WorkerView(
        spec=spec,
        reserved={"cpu": 12.5, "ram_mb": 65536, "licenses": 1},
        free={"cpu": 51.5, "ram_mb": 449_464, "licenses": 3},
        gpu_free={i: 0.25 * i for i in range(gpus)},
        last_seen=NOW - 0.4,
        running=7,
    )


FLEET = [
    worker("gpu-node-a17", 8, zone="eu-west-1a", pool="training"),
    worker("gpu-node-b02", 2, zone="eu-west-1b", pool="inference"),
    worker("cpu-node-c33", 0, zone="eu-west-1a", pool="batch"),
]
LEADER = [CoordinatorView(name="coord-1:4711", role="leader", term=4)]


def header(text: str, line: int = 2) -> list[str]:
    return re.split(r"\s{2,}", text.splitlines()[line].strip())


def rows(text: str, first: str) -> list[str]:
    """The lines of the table row starting with ``first`` (its wrapped lines too)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first + " "))
    end = next(
        (i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines)
    )
    return lines[start:end]


@pytest.mark.parametrize(
    ("width", "columns"),
    [
        (80, ["worker", "health", "cpu used", "ram MB used", "gpus free", "running"]),
        (100, ["worker", "health", "cpu used", "ram MB used", "gpus free", "running", "labels"]),
        (180, ["worker", "health", "cpu used", "ram MB used", "gpus free", "running", "labels",
               "cpu free", "ram free", "last seen", "resources used/total"]),
    ],
)  # fmt: skip
def test_fleet_workers_fits_the_width(width: int, columns: list[str]) -> None:
    text = workers_text(FLEET, LEADER, NOW, width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert text.splitlines()[:2] == [
        "coordinators: coord-1:4711 (leader, term 4)",
        "labels of every worker: arch=x86_64 os=linux",
    ]
    assert header(text) == columns
    for name in ("cpu-node-c33", "gpu-node-a17", "gpu-node-b02"):
        assert rows(text, name)[0].split()[:2] == [name, "healthy"]
    gpus = " ".join(line[text.splitlines()[2].index("gpus free") :] for line in
                    rows(text, "gpu-node-a17")).split()  # fmt: skip
    assert [cell for cell in gpus if cell.startswith("7:")] == ["7:H100-SXM5-80GB=1.75"]


def test_at_180_columns_short_cells_stay_whole_and_the_longest_wraps() -> None:
    text = workers_text(FLEET, LEADER, NOW, 180)
    assert [len(rows(text, w.spec.name)) for w in FLEET] == [8, 2, 1]  # a line per 8 GPUs
    assert "pool=training zone=eu-west-1a" in rows(text, "gpu-node-a17")[0]
    assert rows(text, "gpu-node-a17")[0].endswith("licenses=1/4")


def test_without_a_limit_nothing_is_dropped_or_wrapped() -> None:
    text = workers_text(FLEET, LEADER, NOW, None)
    assert len(header(text)) == 11
    assert len(text.splitlines()) == 3 + 1 + len(FLEET)


def node(node_id: str, status: str, **fields: object) -> NodeView:
    base: dict[str, object] = {
        "id": node_id,
        "task": "train_model_shard",
        "status": status,
        "worker": "gpu-node-a17",
        "attempt": 1,
        "started_at": NOW - 30,
    }
    return NodeView.model_validate(base | fields)


def test_fleet_status_at_80_wraps_the_error_and_keeps_ids_whole() -> None:
    error = ErrorInfo(
        type="RuntimeError",
        message="CUDA out of memory while allocating 20.00 GiB on device 3 (79.10 GiB in use)",
        traceback='Traceback (most recent call last):\n  File "train.py", line 9\nRuntimeError\n',
    )
    view = RunView(
        run_id=RUN_ID,
        name="nightly",
        status="failed",
        submitted_at=NOW - 60,
        finished_at=NOW,
        nodes=(
            node("prepare_dataset", "succeeded", finished_at=NOW - 20, gpu_devices=(0,)),
            node("train_shard_0", "failed", finished_at=NOW - 5, error=error),
        ),
    )
    text = status_text(view, NOW, 80)
    table = text.split("\n\n")[1]
    assert max(len(line) for line in table.splitlines()) <= 80
    assert header(table, 0) == ["node", "status", "worker", "gpus", "reason/error"]
    assert rows(table, "prepare_dataset")[0].split() == [
        "prepare_dataset", "succeeded", "gpu-node-a17", "0", "-"]  # fmt: skip
    failed = rows(table, "train_shard_0")
    assert [line[48:] for line in failed] == [
        "RuntimeError: CUDA out of memory",
        "while allocating 20.00 GiB on",
        "device 3 (79.10 GiB in use)",
    ]
    assert text.split("\n\n")[2].startswith("node train_shard_0 failed (attempt 1 on gpu-node-a17)")


@pytest.mark.parametrize("width", [80, 100, 180])
def test_fleet_runs_keeps_whole_run_ids(width: int) -> None:
    runs = [
        RunView(run_id=RUN_ID, name="a rather long name for a nightly pipeline", status="running",
                submitted_at=NOW - 5, nodes=(node("x", "running"),)),
    ]  # fmt: skip
    text = runs_table(runs, NOW, width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert text.splitlines()[2].startswith(RUN_ID + "  ")


# -- the fitting itself ------------------------------------------------------------------------

COLUMNS = [Column("id"), Column("note", 50, wrap=True, fold=4), Column("extra", 10)]
ROWS = [["abc", "one two three", "x" * 12]]


def test_the_least_needed_column_goes_first() -> None:
    assert fit_table(COLUMNS, ROWS, 40).splitlines() == [
        "id   note           extra",
        "---- -------------- ------------",
        "abc  one two three  xxxxxxxxxxxx",
    ]
    assert fit_table(COLUMNS, ROWS, 24).splitlines()[2:] == [  # wrapping comes before dropping
        "abc  one    xxxxxxxxxxxx",
        "     two",
        "     three",
    ]
    assert fit_table(COLUMNS, ROWS, 18).splitlines() == [
        "id   note",
        "---- -------------",
        "abc  one two three",
    ]


def test_a_wide_column_dropped_does_not_take_narrow_ones_with_it() -> None:
    columns = [Column("id"), Column("wide", 20), Column("n", 10)]
    text = fit_table(columns, [["abc", "w" * 30, "1"]], 20)
    assert text.splitlines()[0].split() == ["id", "n"]


def test_cutting_words_comes_last() -> None:
    assert fit_table(COLUMNS, ROWS, 9).splitlines() == ["id", "---", "abc"]  # note dropped
    kept = [Column("id"), Column("note", wrap=True, fold=4)]
    assert fit_table(kept, [r[:2] for r in ROWS], 12).splitlines()[2:] == [
        "abc  one two", "     three"]  # fmt: skip
    assert fit_table(kept, [r[:2] for r in ROWS], 9).splitlines()[2:] == [
        "abc  one", "     two", "     thre", "     e"]  # fmt: skip


def test_rows_must_match_the_columns() -> None:
    with pytest.raises(ValueError, match="1 cells for 3 columns"):
        fit_table(COLUMNS, [["only"]], 80)


def test_output_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert output_width() == 100
    monkeypatch.setenv("COLUMNS", "")
    assert output_width() is None  # pytest's stdout is not a terminal
