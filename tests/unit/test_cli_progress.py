"""The run progress of ``fleet submit`` and ``fleet status --watch``: the bar by state, and
the two ways of showing it (redrawn on a terminal, a line per change elsewhere)."""

from __future__ import annotations

import io
import itertools

import pytest
from rich.console import Console

from shared.wire.protocol import ErrorInfo
from shared.wire.runs import NodeView
from taskiq_fleet.progress import LineProgress, LiveProgress, bar, counts, frame, summary


def nodes(**by_state: int) -> list[NodeView]:
    return [
        NodeView(id=f"{state}{i}", task="t", status=state)  # type: ignore[arg-type]
        for state, n in by_state.items()
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("tally", "width", "drawn"),
    [
        ({"succeeded": 1, "pending": 1}, 10, "█████·····"),
        ({"succeeded": 1, "failed": 1, "running": 1, "pending": 1}, 8, "██XX▒▒··"),
        ({"succeeded": 1, "skipped": 2}, 9, "███//////"),
        ({"ready": 1, "placed": 1, "cancelled": 1}, 6, "xx░░░░"),
        ({"succeeded": 1, "pending": 2}, 10, "███·······"),
        ({}, 4, "····"),
    ],
)
def test_bar_splits_its_width_by_state(tally: dict[str, int], width: int, drawn: str) -> None:
    assert bar(tally, width).plain == drawn


def test_frame_says_nodes_done_of_total_and_the_count_of_each_state() -> None:
    shown = frame(nodes(succeeded=3, failed=1, running=2, pending=4), 65.0, 80).plain
    first, second = shown.splitlines()
    assert first == "[" + "████████████XXXX▒▒▒▒▒▒▒▒················" + "] 4/10 done  1m05s"
    assert second == "3 succeeded, 1 failed, 2 running, 4 pending"
    assert summary(counts([])) == ""
    assert frame([], None, 80).plain.splitlines() == ["[" + "·" * 40 + "] 0/0 done", "no nodes"]


def test_frame_bar_shrinks_on_a_narrow_terminal() -> None:
    first = frame(nodes(succeeded=1), 1.0, 40).plain.splitlines()[0]
    assert len(first) <= 40
    assert first.startswith("[" + "█" * 10)


def test_lines_only_for_changes() -> None:
    written: list[str] = []
    progress = LineProgress(written.append)
    with progress:
        progress.update(nodes(pending=2))
        progress.update(nodes(pending=2))
        progress.update([NodeView(id="pending0", task="t", status="running", worker="w1")])
    assert written == ["  node pending0: pending", "  node pending1: pending",
                       "  node pending0: running on w1"]  # fmt: skip


def test_live_progress_redraws_in_place_and_prints_a_failure_once() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system=None, width=60)
    ticks = itertools.count()
    failed = NodeView(
        id="b", task="t", status="failed", worker="w1", error=ErrorInfo(type="ValueError")
    )
    with LiveProgress(console, started=0.0, clock=lambda: float(next(ticks))) as progress:
        progress.update(nodes(pending=2))
        progress.update([failed])
        progress.update([failed, NodeView(id="pending0", task="t", status="succeeded")])
    written = out.getvalue()
    assert written.count("node b: failed on w1: ValueError") == 1
    assert "\x1b[2K" in written or "\x1b[1A" in written  # the cursor went back: redrawn
    final = written.rsplit("node b: failed", 1)[1]
    assert "2/3 done" in final
    assert "1 succeeded, 1 failed, 1 pending" in final
