"""A submission is never lost to a failed look-up of finished runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coordinator.service import Coordinator
from shared.dag import Dag, Node
from shared.wire.runs import Submit


@dataclass
class Raw:
    data: bytes


class BrokenStore:
    """The run store during a NATS hiccup: every read times out."""

    async def finished(self, run_ids: list[str]) -> dict[str, Any]:
        raise TimeoutError("nats: timeout")


async def test_a_submission_is_applied_when_the_finished_check_fails() -> None:
    coordinator = Coordinator()
    coordinator._store = BrokenStore()  # type: ignore[assignment]
    submit = Submit(run_id="r1", dag=Dag(nodes=(Node(id="n", task="t"),)))
    runs = await coordinator._submissions(Raw(submit.wire_json()), 0.0)  # type: ignore[arg-type]
    assert runs == {"r1"}
    assert "r1" in coordinator.scheduler.runs
