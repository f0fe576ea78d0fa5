"""Who leads the fleet: one coordinator's view of the leader lease, without I/O.

Any number of coordinators run against one fleet; the one whose claim is in the lease
record (a JetStream KV key, ``coordinator/lease.py``) leads, the others stand by. A
record is written only with the revision its writer last read, so of two claims on the
same revision exactly one wins, and a leader that lost the lease learns it from its next
renewal failing.

Time is each process's own monotonic clock, and no two clocks are compared. A standby
claims only after it has seen the record unchanged for ``ttl``, counted from the moment
it first saw that revision (which is after the write). A leader counts its lease from
when it *sent* the renewal that succeeded (before the write), and acts only for
``ttl * (1 - margin)`` after: so it stops acting before any standby may claim, even when
it was paused (SIGSTOP, a VM stall) and has not yet noticed. ``margin`` covers clock
rates that differ a little and the time between the check and the act.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field


class Role(Enum):
    STANDBY = "standby"
    LEADER = "leader"


class LeaderRecord(BaseModel):
    """The lease record's value. ``holder`` empty: released by a leader that stopped."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: int = 1
    term: int = Field(ge=0)
    holder: str = ""
    name: str = ""
    """The holder's host and pid, for people reading ``fleet workers``."""


class Due(Enum):
    WAIT = "wait"
    RENEW = "renew"
    CLAIM = "claim"


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    ttl: float = 1.5
    """How long a record may stand unchanged before a standby claims it."""
    margin: float = 0.2
    """The share of ``ttl`` a leader gives up, so it stops before a standby may claim."""

    @property
    def renew_every(self) -> float:
        return self.ttl / 5

    @property
    def look_every(self) -> float:
        """How often a standby reads the record."""
        return min(0.1, self.ttl / 10)


class Lease:
    def __init__(self, me: str, timing: LeaseTiming = LeaseTiming()) -> None:
        self.me = me
        self.timing = timing
        self.role = Role.STANDBY
        self.term = 0
        self.record: LeaderRecord | None = None
        self.revision: int | None = None
        self._seen_at: float | None = None
        self._valid_until = 0.0
        self._renewed_at = 0.0

    # -- what was read or written ------------------------------------------------------------

    def observed(self, record: LeaderRecord | None, revision: int | None, now: float) -> None:
        """The record as just read (``None``: there is none)."""
        if revision != self.revision or self._seen_at is None:
            self._seen_at = now
        self.record, self.revision = record, revision
        if self.role is Role.LEADER and (record is None or record.holder != self.me):
            self.lost()

    def won(self, record: LeaderRecord, revision: int, sent_at: float) -> None:
        """A claim or renewal sent at ``sent_at`` was written as ``revision``."""
        self.role, self.term = Role.LEADER, record.term
        self.record, self.revision = record, revision
        self._seen_at = sent_at
        self._renewed_at = sent_at
        self._valid_until = sent_at + self.timing.ttl * (1 - self.timing.margin)

    def lost(self) -> None:
        """Another claim was written first: stand by, act on nothing more."""
        self.role = Role.STANDBY
        self._valid_until = 0.0

    # -- what to do now ------------------------------------------------------------------------

    def due(self, now: float) -> Due:
        if self.role is Role.LEADER:
            late = now - self._renewed_at >= self.timing.renew_every
            return Due.RENEW if late else Due.WAIT
        if self.record is None or not self.record.holder:
            return Due.CLAIM  # never held, or released on a clean stop
        if self._seen_at is None:
            return Due.WAIT  # not read since NATS was back
        return Due.CLAIM if now - self._seen_at >= self.timing.ttl else Due.WAIT

    def unreachable(self) -> None:
        """The record could not be read: a standby counts only time in which it saw the
        record unchanged, so after a NATS outage the leader gets a whole ``ttl`` to renew
        (or every NATS restart would be a takeover)."""
        if self.role is Role.STANDBY:
            self._seen_at = None

    def claim(self, name: str, floor: int = 0) -> LeaderRecord:
        """The record a claim writes (on ``self.revision``, or created if there is none).
        Its term is the last one's plus one; with no record at all (the first start, or a
        record lost with its bucket) it is ``floor``, the wall clock's seconds, so that it
        still ranks above every term agents may have seen, or they would drop each
        assignment of the new leader as stale."""
        term = self.record.term + 1 if self.record is not None else max(1, floor)
        return LeaderRecord(term=term, holder=self.me, name=name)

    def renewal(self) -> LeaderRecord:
        assert self.record is not None
        return self.record

    def release(self) -> LeaderRecord:
        return LeaderRecord(term=self.term, holder="", name="")

    def valid(self, now: float) -> bool:
        """May this coordinator act (send, store, acknowledge) now?"""
        return self.role is Role.LEADER and now < self._valid_until

    def valid_for(self, now: float) -> float:
        return max(0.0, self._valid_until - now) if self.role is Role.LEADER else 0.0
