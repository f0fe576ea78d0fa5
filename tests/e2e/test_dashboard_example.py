"""``python -m examples.dashboard`` runs as a user runs it and shows the failed run."""

from __future__ import annotations

import re

import pytest

from tests.e2e.test_examples import run_example

pytestmark = pytest.mark.integration


def test_the_dashboard_example_shows_the_dag_and_the_failure() -> None:
    out = run_example("dashboard")
    assert re.search(r"^dashboard: http://127\.0\.0\.1:\d+/$", out, re.M), out
    assert re.search(r"^run \w+: failed, page http://127\.0\.0\.1:\d+/runs/\w+$", out, re.M), out
    assert re.search(r"^  prepare\s+succeeded\s+on (cpu|gpu)$", out, re.M), out
    assert re.search(r"^  train\s+failed\s+on (cpu|gpu) \(\w+\)$", out, re.M), out
    assert "edges: [['prepare', 'train']]" in out
