"""The scale benchmarks run end to end at tiny sizes (their figures are not checked: this
machine's timing means nothing here); each starts its own nats-server and processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import crowd, scale


def test_the_deep_queue_benchmark_runs_and_every_result_arrives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scale.json"
    args = ["--tasks", "300", "--reference", "50", "--burst", "100", "--window", "100"]
    assert scale.main([*args, "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert (figures["tasks"], figures["wrong"]) == (300, 0)
    assert figures["peak_rss"] > 0
    assert "wrong or failed results          0" in capsys.readouterr().out


def test_the_crowd_benchmark_runs_with_simulated_agents(tmp_path: Path) -> None:
    out = tmp_path / "crowd.json"
    sizes = ["--tasks", "50", "--round-trips", "5", "--chain", "5", "--fan", "5"]
    args = [*sizes, "--workers", "20", "--interval", "0.5", "--settle", "1.5"]
    assert crowd.main([*args, "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["sim"]["workers"] == 20
    assert figures["sim"]["registers"] >= 20
    assert figures["lag_idle"]["n"] > 0  # the probes' heartbeats were answered
    assert set(figures["crowd"]) == set(figures["alone"])
