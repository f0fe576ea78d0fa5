"""The lease decisions on their own (``coordinator/leadership.py``), with a hand clock."""

from __future__ import annotations

from coordinator.leadership import Due, LeaderRecord, Lease, LeaseTiming

TIMING = LeaseTiming(ttl=1.5, margin=0.2)
HELD = LeaderRecord(term=5, holder="other", name="host:1")


def test_a_claim_ranks_above_the_last_term_and_above_a_lost_record() -> None:
    lease = Lease("me", TIMING)
    lease.observed(HELD, 7, 0.0)
    assert lease.claim("host:2", floor=1_765_000_000).term == 6
    lease.observed(None, None, 0.0)  # the record was lost (a bucket deleted, a data loss)
    assert lease.claim("host:2", floor=1_765_000_000).term == 1_765_000_000


def test_a_standby_counts_only_time_it_could_read_the_record() -> None:
    """Across a NATS outage the leader cannot renew; a standby that counted the outage
    would take over at every NATS restart."""
    lease = Lease("me", TIMING)
    lease.observed(HELD, 7, 0.0)
    lease.unreachable()  # NATS down from 0.5 s to 2.0 s
    lease.observed(HELD, 7, 2.0)  # the same revision, read again
    assert lease.due(2.0) is Due.WAIT
    assert lease.due(3.4) is Due.WAIT
    assert lease.due(3.5) is Due.CLAIM


def test_without_an_outage_the_same_revision_is_claimed_after_ttl() -> None:
    lease = Lease("me", TIMING)
    lease.observed(HELD, 7, 0.0)
    lease.observed(HELD, 7, 1.0)
    assert lease.due(1.4) is Due.WAIT
    assert lease.due(1.5) is Due.CLAIM


def test_a_leader_is_not_made_to_wait_by_an_outage() -> None:
    lease = Lease("me", TIMING)
    record = LeaderRecord(term=6, holder="me", name="host:2")
    lease.won(record, 8, 10.0)
    lease.unreachable()
    assert lease.due(10.0 + TIMING.renew_every) is Due.RENEW
    assert lease.valid(10.0 + TIMING.ttl * 0.79)
    assert not lease.valid(10.0 + TIMING.ttl * 0.8)
