from __future__ import annotations

from pathlib import Path

import pytest
from taskiq import InMemoryBroker

from worker_agent.app import AppError, load_broker

ROOT = Path(__file__).resolve().parents[2]


def test_loads_a_broker_and_its_tasks() -> None:
    broker = load_broker("tests.unit.fixtures_app.good:broker", search_path=ROOT)
    assert isinstance(broker, InMemoryBroker)
    assert broker.find_task("tests.unit.fixtures_app.good:double") is not None


def test_dotted_attribute() -> None:
    broker = load_broker("tests.unit.fixtures_app.good:Holder.broker", search_path=ROOT)
    assert isinstance(broker, InMemoryBroker)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.unit.fixtures_app.good", "must look like 'module:broker'"),
        (":broker", "must look like 'module:broker'"),
        ("tests.unit.fixtures_app.good:", "must look like 'module:broker'"),
        ("no_such_module_xyz:broker", "cannot import module 'no_such_module_xyz': not found"),
        ("tests.unit.fixtures_app.missing_dep:broker", "importing .* failed: No module named"),
        ("tests.unit.fixtures_app.broken:broker", "RuntimeError: boom at import"),
        ("tests.unit.fixtures_app.good:nope", "has no attribute 'nope'"),
        ("tests.unit.fixtures_app.good:not_a_broker", "is a int, not a taskiq broker"),
    ],
)
def test_bad_app_gets_a_clear_error(spec: str, message: str) -> None:
    with pytest.raises(AppError, match=message):
        load_broker(spec, search_path=ROOT)
