"""The dashboard's JSON, from wire models: worker rows, a run's DAG levels, why work waits."""

from __future__ import annotations

import itertools

from shared.resources import WorkerSpec
from shared.wire.label_keys import WORKER_TASKS
from shared.wire.protocol import ErrorInfo, Heartbeat, Reserved
from shared.wire.runs import NodeView, RunView, WorkerView
from taskiq_fleet.dashboard import shapes

SPEC = WorkerSpec.model_validate(
    {
        "name": "g1",
        "cpu": 8,
        "ram_mb": 4096,
        "gpus": [{"index": 0, "model": "L4", "memory_mb": 24576}, {"index": 1, "model": "L4"}],
        "resources": {"licenses": 2},
        "labels": {"zone": "eu", WORKER_TASKS: "abc"},
    }
)


def test_a_heartbeat_row_has_every_dimension_each_device_and_no_fleet_label() -> None:
    beat = Heartbeat(
        worker="g1",
        started_at=1.0,
        seq=3,
        interval=0.5,
        capacity=SPEC,
        reserved=Reserved(cpu=2.5, ram_mb=1024, gpus={1: 0.5}, resources={"licenses": 1}),
        cpu_percent=40.0,
        available_ram_mb=3000,
    )
    row = shapes.row_of_heartbeat(beat, now=100.0)
    assert row["dims"] == [
        {"name": "cpu", "total": 8.0, "reserved": 2.5},
        {"name": "ram_mb", "total": 4096, "reserved": 1024.0},
        {"name": "licenses", "total": 2.0, "reserved": 1},
    ]
    assert [(g["index"], g["model"], g["reserved"]) for g in row["gpus"]] == [
        (0, "L4", 0.0),
        (1, "L4", 0.5),
    ]
    assert row["labels"] == {"zone": "eu"}
    assert (row["last_seen"], row["interval"], row["running"]) == (100.0, 0.5, 0)


def test_a_coordinator_row_reads_reserved_shares_from_free_ones() -> None:
    view = WorkerView(spec=SPEC, reserved={"cpu": 1.0}, gpu_free={0: 0.25, 1: 1.0}, draining=True)
    row = shapes.row_of_view(view)
    assert [g["reserved"] for g in row["gpus"]] == [0.75, 0.0]
    assert row["draining"] is True
    assert row["interval"] == shapes.DEFAULT_INTERVAL


def test_levels_are_the_longest_distance_from_a_root() -> None:
    edges = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("a", "d")]
    assert shapes.levels(["d", "c", "b", "a", "e"], edges) == {
        "a": 0,
        "b": 1,
        "c": 1,
        "d": 2,
        "e": 0,
    }


def test_a_chain_of_ten_thousand_nodes_does_not_recurse() -> None:
    nodes = [f"n{i}" for i in range(10_000)]
    found = shapes.levels(list(reversed(nodes)), list(itertools.pairwise(nodes)))
    assert found["n9999"] == 9999


def test_a_run_detail_carries_edges_levels_errors_and_previews() -> None:
    error = ErrorInfo(type="ValueError", message="bad", traceback="Traceback ...")
    view = RunView(
        run_id="r",
        status="failed",
        nodes=(
            NodeView(id="a", task="t", status="succeeded", started_at=1.0, finished_at=3.5),
            NodeView(id="b", task="t", status="failed", error=error, worker="w", gpu_devices=(1,)),
        ),
        outputs={"x": "y" * 1000},
        edges=(("a", "b"),),
    )
    detail = shapes.run_detail(view)
    assert detail["edges"] == [["a", "b"]]
    assert detail["levels"] == {"a": 0, "b": 1}
    assert detail["nodes"][0]["duration"] == 2.5
    assert detail["nodes"][1]["error"]["traceback"] == "Traceback ..."
    assert detail["nodes"][1]["gpu_devices"] == [1]
    assert len(detail["outputs"]["x"]) == shapes.PREVIEW + 3
    assert shapes.run_summary(view)["nodes"] == {"succeeded": 1, "failed": 1}


def test_waiting_names_busy_infeasible_and_queued_nodes_of_running_runs() -> None:
    running = RunView(
        run_id="r1",
        nodes=(
            NodeView(id="a", task="t", status="ready", reason="busy (cpu: 2 workers); nearest: w"),
            NodeView(id="b", task="t", status="ready", reason="infeasible: no worker has 9 cpu"),
            NodeView(id="c", task="t", status="ready"),
            NodeView(id="d", task="t", status="pending"),
            NodeView(id="e", task="t", status="running"),
        ),
    )
    ended = RunView(run_id="r2", status="failed", nodes=(NodeView(id="z", task="t"),))
    found = shapes.waiting([running, ended])
    assert [(n["node"], n["why"]) for n in found["nodes"]] == [
        ("a", "busy"),
        ("b", "infeasible"),
        ("c", "queued"),
    ]
    assert found["upstream"] == 1
