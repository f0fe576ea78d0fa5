"""The producer's side of batching: a task's batch options, and how one ``kiq`` is marked
as a member (the grouping itself is the coordinator's: ``test_batches.py``)."""

from __future__ import annotations

import pytest

from shared.dag import Batching
from taskiq_fleet.batching import BatchConfig, BatchConfigError


def test_config_from_labels() -> None:
    assert BatchConfig.from_labels({}) is None
    assert BatchConfig.from_labels({"batch": False}) is None
    assert BatchConfig.from_labels({"batch": True}) == BatchConfig(100, 3.0)
    assert BatchConfig.from_labels(
        {"batch": "True", "batch_size": "60", "batch_timeout": "3"}
    ) == BatchConfig(60, 3.0)
    with pytest.raises(BatchConfigError):
        BatchConfig.from_labels({"batch": True, "batch_size": 0})
    with pytest.raises(BatchConfigError):
        BatchConfig.from_labels({"batch": True, "batch_timeout": -1})
    with pytest.raises(BatchConfigError):
        BatchConfig.from_labels({"batch": True, "batch_size": "many"})


def scale(items: list[int], factor: int) -> list[int]:
    return [i * factor for i in items]


def test_a_member_names_where_its_item_is() -> None:
    config = BatchConfig(5, 0.5)
    assert config.member("scale", (1, 10), {}, scale) == Batching(size=5, timeout=0.5)
    by_name = config.member("scale", (), {"items": 1, "factor": 10}, scale)
    assert by_name == Batching(size=5, timeout=0.5, item="items")
    with pytest.raises(TypeError, match="scale: a batched kiq needs its item"):
        config.member("scale", (), {"factor": 10}, scale)
