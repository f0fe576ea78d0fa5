"""Every NATS subject, stream, KV bucket and object store name, built in one place.

Building names here, and nowhere else, means a typo cannot split the cluster
into two sides that never hear each other, and that a second fleet can share a
NATS account by choosing another prefix.

Names that go into a subject (worker names, run ids, node ids) must be *tokens*:
1 to 128 characters from ``A-Z a-z 0-9 _ -``. ``token()`` refuses anything else
with a ValueError rather than escaping it: an escaped name would no longer read
the same in ``nats sub`` output, in logs and in the CLI, and a strict check at
the edge (the agent's ``--name``, the DAG's node ids) gives the user the error
while they can still fix it. ``as_token()`` derives a default worker name from a
hostname; it is lossy, so it is never applied to ids received from elsewhere.

With the default prefix ``fleet``:

=============================== =========== =========== ==================== =========
subject                         publisher   subscriber  message(s)           transport
=============================== =========== =========== ==================== =========
fleet.agent.register.<worker>   agent       coordinator Register             core
fleet.agent.heartbeat.<worker>  agent       coordinator Heartbeat            core
fleet.agent.deregister.<worker> agent       coordinator Deregister           core
fleet.worker.<worker>.assign    coordinator agent       Assignment (Batch)   core
fleet.worker.<worker>.cancel    coordinator agent       Cancel (Batch)       core
fleet.ack.<worker>              agent       coordinator Accept, Reject       core
fleet.outcome.<run>.<node>      agent       coordinator Outcome              JetStream
fleet.outcome._batch.<worker>   agent       coordinator Batch of Outcome     JetStream
fleet.submit                    client      coordinator Submit               JetStream
fleet.run.<run>                 coordinator client      RunUpdate            core
fleet.ctl.<verb>                client      coordinator request/reply        core
=============================== =========== =========== ==================== =========

``<verb>`` is one of ``CONTROL_VERBS`` (workers, runs, status, cancel, limit).

JetStream names (prefix upper-cased, ``.`` and ``-`` become ``_``): stream ``FLEET_OUTCOMES``
over ``fleet.outcome.>``, stream ``FLEET_SUBMISSIONS`` over ``fleet.submit``, KV
buckets ``FLEET_RUNS`` (key: run id) and ``FLEET_NODES`` (key: ``<run>.<node>``,
so ``<run>.*`` watches one run), object store ``FLEET_PAYLOADS`` for large
arguments and return values.

Every subject an agent publishes on names its worker (except outcomes, which
JetStream stores per run and node so a finished run can be purged with one
filter), so a NATS permission ``fleet.agent.*.W`` / ``fleet.ack.W`` confines
agent W to its own subjects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_TOKEN_LENGTH = 128
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")
_NOT_TOKEN_RE = re.compile(r"[^A-Za-z0-9_-]+")
_PREFIX_RE = re.compile(r"[a-z0-9][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)*")

CONTROL_VERBS = ("workers", "runs", "status", "cancel", "limit")


def token(value: str) -> str:
    """Return ``value`` if it can stand as one subject token, else say why not."""
    if not isinstance(value, str):
        raise TypeError(f"a subject token must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError("an empty name cannot be used in a NATS subject")
    if len(value) > MAX_TOKEN_LENGTH:
        raise ValueError(f"name {value[:20]!r}... is longer than {MAX_TOKEN_LENGTH} characters")
    if not _TOKEN_RE.fullmatch(value):
        bad = "".join(sorted({c for c in value if not _TOKEN_RE.fullmatch(c)}))
        raise ValueError(
            f"name {value!r} cannot be used in a NATS subject: it contains {bad!r}; "
            "use letters, digits, '_' and '-' only"
        )
    return value


def as_token(text: str) -> str:
    """A token resembling ``text`` (``gpu1.lab`` -> ``gpu1-lab``), for default names only."""
    cleaned = _NOT_TOKEN_RE.sub("-", text).strip("-")[:MAX_TOKEN_LENGTH]
    return cleaned or "worker"


@dataclass(frozen=True, slots=True)
class Subjects:
    """The names of one fleet; every process of a fleet must use the same prefix."""

    prefix: str = "fleet"

    def __post_init__(self) -> None:
        # Lower-case tokens without '_' keep the derived JetStream names distinct:
        # "a.b" -> "A_B" could otherwise collide with "a_b".
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise ValueError(
                f"invalid subject prefix {self.prefix!r}: dot-separated tokens of "
                "lower-case letters, digits and '-', e.g. 'fleet' or 'prod.fleet'"
            )

    # -- agent -> coordinator (core NATS) ------------------------------------

    def register(self, worker: str) -> str:
        return f"{self.prefix}.agent.register.{token(worker)}"

    def heartbeat(self, worker: str) -> str:
        return f"{self.prefix}.agent.heartbeat.{token(worker)}"

    def deregister(self, worker: str) -> str:
        return f"{self.prefix}.agent.deregister.{token(worker)}"

    def ack(self, worker: str) -> str:
        return f"{self.prefix}.ack.{token(worker)}"

    @property
    def all_registers(self) -> str:
        return f"{self.prefix}.agent.register.*"

    @property
    def all_heartbeats(self) -> str:
        return f"{self.prefix}.agent.heartbeat.*"

    @property
    def all_deregisters(self) -> str:
        return f"{self.prefix}.agent.deregister.*"

    @property
    def all_agent_events(self) -> str:
        return f"{self.prefix}.agent.>"

    @property
    def all_acks(self) -> str:
        return f"{self.prefix}.ack.*"

    # -- coordinator -> agent (core NATS) ------------------------------------

    def assign(self, worker: str) -> str:
        return f"{self.prefix}.worker.{token(worker)}.assign"

    def cancel(self, worker: str) -> str:
        return f"{self.prefix}.worker.{token(worker)}.cancel"

    def worker_inbox(self, worker: str) -> str:
        """Everything addressed to one agent, for a single subscription."""
        return f"{self.prefix}.worker.{token(worker)}.>"

    # -- coordinator -> clients (core NATS) ----------------------------------

    def run_updates(self, run_id: str) -> str:
        """``RunUpdate`` pushes for one run; a client subscribes before it submits."""
        return f"{self.prefix}.run.{token(run_id)}"

    # -- JetStream -----------------------------------------------------------

    def outcome(self, run_id: str, node_id: str) -> str:
        return f"{self.prefix}.outcome.{token(run_id)}.{token(node_id)}"

    def worker_outcomes(self, worker: str) -> str:
        """Where an agent stores a ``Batch`` of outcomes that finished together. Under the
        outcome wildcard, so the same stream and consumer take it; a run named ``_batch``
        is harmless since receivers decode single outcomes and batches alike."""
        return f"{self.prefix}.outcome._batch.{token(worker)}"

    def run_outcomes(self, run_id: str) -> str:
        return f"{self.prefix}.outcome.{token(run_id)}.*"

    @property
    def all_outcomes(self) -> str:
        return f"{self.prefix}.outcome.>"

    @property
    def submit(self) -> str:
        return f"{self.prefix}.submit"

    @property
    def _upper(self) -> str:
        return self.prefix.upper().replace(".", "_").replace("-", "_")

    @property
    def outcomes_stream(self) -> str:
        return f"{self._upper}_OUTCOMES"

    @property
    def submissions_stream(self) -> str:
        return f"{self._upper}_SUBMISSIONS"

    def streams(self) -> dict[str, tuple[str, ...]]:
        """Stream name -> subjects it captures, for provisioning and deploy configs."""
        return {
            self.outcomes_stream: (self.all_outcomes,),
            self.submissions_stream: (self.submit,),
        }

    @property
    def runs_bucket(self) -> str:
        return f"{self._upper}_RUNS"

    @property
    def nodes_bucket(self) -> str:
        return f"{self._upper}_NODES"

    @property
    def payloads_bucket(self) -> str:
        return f"{self._upper}_PAYLOADS"

    @staticmethod
    def run_key(run_id: str) -> str:
        return token(run_id)

    @staticmethod
    def node_key(run_id: str, node_id: str) -> str:
        return f"{token(run_id)}.{token(node_id)}"

    @staticmethod
    def run_nodes_key(run_id: str) -> str:
        """KV key filter for every node of one run."""
        return f"{token(run_id)}.*"

    # -- control: client requests, coordinator replies (core NATS) ----------

    def ctl(self, verb: str) -> str:
        if verb not in CONTROL_VERBS:
            raise ValueError(f"unknown control verb {verb!r}; expected one of {CONTROL_VERBS}")
        return f"{self.prefix}.ctl.{verb}"

    @property
    def all_ctl(self) -> str:
        return f"{self.prefix}.ctl.*"
