"""The leader lease never lets two coordinators act at once.

A simulation: three coordinators share one revision-checked record; every read and
write takes a random time to reach it and to come back, and any coordinator may be
paused for a random while (SIGSTOP, a VM stall). Each one's ``Lease`` decides alone, on
its own clock (here all clocks run at one rate). The property: the intervals in which
coordinators of different terms may act (``Lease.valid``) never overlap, and someone
leads again after the leader stops for good.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.leadership import Due, LeaderRecord, Lease, LeaseTiming, Role

TIMING = LeaseTiming(ttl=1.0, margin=0.2)


@dataclass
class Store:
    record: LeaderRecord | None = None
    revision: int = 0

    def write(self, record: LeaderRecord, last: int | None) -> int | None:
        if (last or 0) != self.revision:
            return None
        self.record, self.revision = record, self.revision + 1
        return self.revision


@dataclass(order=True)
class Step:
    at: float
    seq: int
    who: int = field(compare=False)
    kind: str = field(compare=False)
    payload: object = field(compare=False, default=None)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[float], list[tuple[int, float, float]], int]:
    delays = draw(st.lists(st.floats(0.0, 0.3), min_size=200, max_size=200))
    pauses = draw(
        st.lists(
            st.tuples(st.integers(0, 2), st.floats(0.0, 20.0), st.floats(0.0, 4.0)), max_size=6
        )
    )
    dies = draw(st.integers(-1, 2))
    return delays, pauses, dies


class World:
    """Three coordinators, the record, and a queue of what happens when."""

    def __init__(self, delays: list[float], pauses: list[tuple[int, float, float]]) -> None:
        self.store, self.leases = Store(), [Lease(f"c{i}", TIMING) for i in range(3)]
        self.delays, self.pauses = delays, pauses
        self.valid: list[tuple[int, float, float]] = []  # term, from, until
        self.queue: list[Step] = []
        self.seq = 0

    def push(self, at: float, who: int, kind: str, payload: object = None) -> None:
        self.seq += 1
        heapq.heappush(self.queue, Step(at, self.seq, who, kind, payload))

    def later(self, now: float) -> float:
        return now + self.delays[self.seq % len(self.delays)] + 0.001

    def paused(self, step: Step) -> bool:
        for who, start, length in self.pauses:
            if who == step.who and start <= step.at < start + length:
                self.push(start + length, who, step.kind, step.payload)  # resumed later
                return True
        return False

    def act(self, now: float, who: int, lease: Lease) -> None:
        due = lease.due(now)
        if due is Due.WAIT and lease.role is Role.STANDBY:
            self.push(self.later(now), who, "read")
        elif due is not Due.WAIT:
            record = lease.claim(f"c{who}") if due is Due.CLAIM else lease.renewal()
            self.push(self.later(now), who, "write", (record, lease.revision, now))
        wait = TIMING.renew_every if lease.role is Role.LEADER else TIMING.look_every
        self.push(now + wait, who, "act")

    def handle(self, step: Step) -> None:
        now, who, lease = step.at, step.who, self.leases[step.who]
        if step.kind == "act":
            self.act(now, who, lease)
        elif step.kind == "read":
            self.push(
                self.later(now), who, "seen", (self.store.record, self.store.revision or None)
            )
        elif step.kind == "write":
            record, last, sent = step.payload  # type: ignore[misc]
            written = self.store.write(record, last)
            self.push(self.later(now), who, "written", (record, written, sent))
        elif step.kind == "seen":
            lease.observed(*step.payload, now)  # type: ignore[misc]
        elif step.kind == "written":
            record, written, sent = step.payload  # type: ignore[misc]
            if written is None:
                self.push(now, who, "read")
                return
            lease.won(record, written, sent)
            until = sent + TIMING.ttl * (1 - TIMING.margin)
            if until > now:
                self.valid.append((lease.term, now, until))

    def run(self, end: float, dies: int, died_at: float) -> None:
        for i in range(3):
            self.push(0.01 * i, i, "act")
        while self.queue and self.queue[0].at <= end:
            step = heapq.heappop(self.queue)
            if (step.who == dies and step.at >= died_at) or self.paused(step):
                continue
            self.handle(step)


@settings(max_examples=150, deadline=None)
@given(worlds())
def test_no_two_terms_act_at_once_and_someone_leads_again(
    world: tuple[list[float], list[tuple[int, float, float]], int],
) -> None:
    delays, pauses, dies = world
    sim, died_at = World(delays, pauses), 10.0
    sim.run(end=20.0, dies=dies, died_at=died_at)

    spans: dict[int, tuple[float, float]] = {}
    for term, start, until in sim.valid:
        lo, hi = spans.get(term, (start, until))
        spans[term] = (min(lo, start), max(hi, until))
    for (t1, (_, end1)), (t2, (start2, _)) in itertools.pairwise(sorted(spans.items())):
        assert end1 <= start2, f"term {t1} may act until {end1:.3f}, term {t2} from {start2:.3f}"
    if dies >= 0 and not any(who == dies for who, _, _ in pauses):
        assert any(start > died_at for _, start, _ in sim.valid), "nobody led after the death"
