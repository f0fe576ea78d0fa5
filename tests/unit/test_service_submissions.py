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


@dataclass
class Seq:
    stream: int


@dataclass
class Meta:
    num_delivered: int
    sequence: Seq


@dataclass
class Delivered:
    """A submission as a consumer delivers it: its JetStream metadata too."""

    data: bytes
    metadata: Meta


class CountingStore:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def finished(self, run_ids: list[str]) -> dict[str, Any]:
        self.asked += run_ids
        return {}


async def asked_for(fresh: bool, delivered: int, seq: int, replayed_up_to: int = 0) -> list[str]:
    coordinator = Coordinator()
    store = coordinator._store = CountingStore()  # type: ignore[assignment]
    coordinator._submit_replay_until = replayed_up_to
    submit = Submit(run_id="r1", dag=Dag(nodes=(Node(id="n", task="t"),)), fresh=fresh)
    msg = Delivered(submit.wire_json(), Meta(delivered, Seq(seq)))
    assert await coordinator._submissions(msg, 0.0) == {"r1"}  # type: ignore[arg-type]
    return store.asked  # type: ignore[attr-defined, no-any-return]


async def test_a_fresh_id_delivered_for_the_first_time_is_not_looked_up() -> None:
    assert await asked_for(fresh=True, delivered=1, seq=10) == []


async def test_an_id_the_client_chose_is_looked_up() -> None:
    assert await asked_for(fresh=False, delivered=1, seq=10) == ["r1"]


async def test_a_fresh_id_delivered_again_or_from_before_the_term_is_looked_up() -> None:
    assert await asked_for(fresh=True, delivered=2, seq=10) == ["r1"]
    assert await asked_for(fresh=True, delivered=1, seq=10, replayed_up_to=10) == ["r1"]
