"""The flow examples run against a live local fleet and print what the documents promise."""

from __future__ import annotations

import subprocess
import sys

from tests.processes import ROOT


def test_flow_demo_runs_every_pipeline_type() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.flow_demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "-> 81" in out
    assert "tracking: COMPLETED" in out
    assert "0:square: COMPLETED on" in out
    assert "embed    ran on gpu" in out
    assert "mapped -> [1, 4, 9, 16, 25, 36]" in out
    assert "kiq_map_reduce([1, 2, 3]) -> 14" in out
    assert "on attempt 3" in out
