"""Every NATS subject, stream and KV bucket name, built in one place.

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

==================================== =========== =========== ==================== =========
subject                              publisher   subscriber  message(s)           transport
==================================== =========== =========== ==================== =========
fleet.agent.register.<worker>        agent       coordinator Register             core
fleet.agent.heartbeat.<worker>       agent       coordinator Heartbeat            core
fleet.agent.deregister.<worker>      agent       coordinator Deregister           core
fleet.worker.<worker>.assign         coordinator agent       Assignment (Batch)   core
fleet.worker.<worker>.cancel         coordinator agent       Cancel (Batch)       core
fleet.worker.<worker>.reregister     coordinator agent       Reregister           core
fleet.worker.<worker>.pace           coordinator agent       Pace                 core
fleet.ack.<worker>                   agent       coordinator Accept, Reject       core
fleet.outcome.<worker>.<run>.<node>  agent       coordinator Outcome              JetStream
fleet.outcome.<worker>._batch        agent       coordinator Batch of Outcome     JetStream
fleet.submit                         client      coordinator Submit               JetStream
fleet.payload.<user>.<key>.<chunk>   client/agent client/agent one chunk of a value JetStream
fleet.run.<run>                      coordinator client      RunUpdate            core
fleet.client.<client>                coordinator client      RunUpdate            core
fleet.ctl.<verb>                     client      coordinator request/reply        core
==================================== =========== =========== ==================== =========

``<verb>`` is one of ``CONTROL_VERBS`` (workers, runs, status, cancel, limit).
``<client>`` is a client's random id: its one inbox for the updates of every run it
submitted (``Submit.notify``).

Each kind of subject has one method that builds it and one ``parse_<kind>`` that reads
its tokens back (a ``SubjectError`` when the subject is not of that kind), so no caller
splits a subject itself.

JetStream names (prefix upper-cased, ``.`` and ``-`` become ``_``): stream ``FLEET_OUTCOMES``
over ``fleet.outcome.>``, stream ``FLEET_SUBMISSIONS`` over ``fleet.submit``, KV
buckets ``FLEET_RUNS`` (key: run id), ``FLEET_NODES`` (key: ``<run>.<node>``,
so ``<run>.*`` watches one run) and ``FLEET_PIPELINES`` (users' pipeline tracking
records, ``NatsPipelineStorage``), stream ``FLEET_PAYLOADS`` over ``fleet.payload.>``
for large arguments and return values (``shared/payloads.py``): each is written under
its writer's NATS user (``payload_writer(user)``), once, and read back by subject.

Every subject an agent publishes on names its worker, outcomes included, in a
fixed position: ``agent_publish(W)`` lists the patterns (``fleet.agent.*.W``,
``fleet.ack.W``, ``fleet.outcome.W.>``) a NATS permission confines agent W to,
and ``agent_subscribe(W)`` what it may receive. The coordinator reads the worker
back (``parse_sender``, ``parse_outcome_sender``) and drops a message whose
content names another worker (``coordinator/authority.py``). A finished run's
outcomes are still one filter away: ``run_outcomes(run)`` is
``fleet.outcome.*.<run>.*``.
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass

MAX_TOKEN_LENGTH = 128
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")
_NOT_TOKEN_RE = re.compile(r"[^A-Za-z0-9_-]+")
_PREFIX_RE = re.compile(r"[a-z0-9][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)*")

CONTROL_VERBS = ("workers", "runs", "status", "cancel", "limit")
WORKER_VERBS = ("assign", "cancel", "reregister", "pace")
AGENT_KINDS = ("register", "heartbeat", "deregister", "ack")
"""The control subjects an agent sends on, each ``...<worker>``."""
"""What the coordinator sends on ``<prefix>.worker.<worker>.<verb>``."""

# Every subject after the prefix; ``{name}`` stands for one token.
_TEMPLATES: dict[str, str] = {
    "register": "agent.register.{worker}",
    "heartbeat": "agent.heartbeat.{worker}",
    "deregister": "agent.deregister.{worker}",
    "ack": "ack.{worker}",
    "assign": "worker.{worker}.assign",
    "cancel": "worker.{worker}.cancel",
    "reregister": "worker.{worker}.reregister",
    "pace": "worker.{worker}.pace",
    "run_updates": "run.{run}",
    "client_inbox": "client.{client}",
    "direct": "client.{client}.{worker}",
    "worker_outcomes": "outcome.{worker}._batch",
    "outcome": "outcome.{worker}.{run}.{node}",
    "submit": "submit",
    "ctl": "ctl.{verb}",
    "payload_chunk": "payload.{writer}.{key}.{chunk}",
}


_SENDER_HEADS = {_TEMPLATES[kind].removesuffix(".{worker}"): kind for kind in AGENT_KINDS}
"""Each ``AGENT_KINDS`` template without its last token, ``{worker}``, to its kind."""


@functools.lru_cache(maxsize=8)
def _sender_pattern(prefix: str) -> re.Pattern[str]:
    """One expression for every ``AGENT_KINDS`` subject of ``prefix``: group 1 is the
    template's head (``_SENDER_HEADS``), group 2 the worker. A heartbeat's subject is read
    once per heartbeat, 5,000 a second at 10,000 workers."""
    heads = "|".join(re.escape(head) for head in _SENDER_HEADS)
    return re.compile(rf"{re.escape(prefix)}\.({heads})\.({_TOKEN_RE.pattern})")


class SubjectError(ValueError):
    """A subject that is not of the kind its reader expected."""


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

    # -- building and parsing by template ------------------------------------

    def _build(self, kind: str, **names: str) -> str:
        rest = _TEMPLATES[kind].format(**{k: token(v) for k, v in names.items()})
        return f"{self.prefix}.{rest}"

    def _parse(self, kind: str, subject: str) -> tuple[str, ...]:
        """The tokens standing for ``{name}`` in ``kind``'s template, in order."""
        head = f"{self.prefix}."
        parts = subject[len(head) :].split(".") if subject.startswith(head) else []
        pattern = _TEMPLATES[kind].split(".")
        found: list[str] = []
        if len(parts) == len(pattern):
            for want, got in zip(pattern, parts, strict=True):
                if want.startswith("{"):
                    found.append(got)
                elif want != got:
                    break
            else:
                if all(_TOKEN_RE.fullmatch(t) for t in found):
                    return tuple(found)
        raise SubjectError(f"{subject!r} is not a {kind} subject of prefix {self.prefix!r}")

    def _parse_one(self, kind: str, subject: str) -> str:
        return self._parse(kind, subject)[0]

    def kind_of(self, subject: str) -> str:
        """Which kind of fleet subject ``subject`` is; SubjectError for none."""
        for kind in _TEMPLATES:
            try:
                self._parse(kind, subject)
            except SubjectError:
                continue
            return kind
        raise SubjectError(f"{subject!r} is no subject of fleet {self.prefix!r}")

    # -- agent -> coordinator (core NATS) ------------------------------------

    def register(self, worker: str) -> str:
        return self._build("register", worker=worker)

    def parse_register(self, subject: str) -> str:
        """The worker named in a register subject."""
        return self._parse_one("register", subject)

    def heartbeat(self, worker: str) -> str:
        return self._build("heartbeat", worker=worker)

    def parse_heartbeat(self, subject: str) -> str:
        """The worker named in a heartbeat subject."""
        return self._parse_one("heartbeat", subject)

    def deregister(self, worker: str) -> str:
        return self._build("deregister", worker=worker)

    def parse_deregister(self, subject: str) -> str:
        """The worker named in a deregister subject."""
        return self._parse_one("deregister", subject)

    def ack(self, worker: str) -> str:
        return self._build("ack", worker=worker)

    def parse_ack(self, subject: str) -> str:
        """The worker named in a ack subject."""
        return self._parse_one("ack", subject)

    @property
    def all_registers(self) -> str:
        return f"{self.prefix}.agent.register.*"

    @property
    def all_heartbeats(self) -> str:
        return f"{self.prefix}.agent.heartbeat.*"

    @property
    def all_deregisters(self) -> str:
        return f"{self.prefix}.agent.deregister.*"

    def parse_sender(self, subject: str) -> tuple[str, str]:
        """(kind, worker) of a subject an agent sends control traffic on: kind is one of
        ``AGENT_KINDS`` (register, heartbeat, deregister, ack)."""
        found = _sender_pattern(self.prefix).fullmatch(subject)
        if found is None:
            raise SubjectError(f"{subject!r} is no agent subject of prefix {self.prefix!r}")
        return _SENDER_HEADS[found[1]], found[2]

    def agent_publish(self, worker: str) -> tuple[str, ...]:
        """The fleet subjects agent ``worker`` may publish on (NATS patterns): its own name
        is in each, so a permission with these confines it to speaking for itself."""
        w = token(worker)
        return (
            f"{self.prefix}.agent.*.{w}",
            self.ack(w),
            f"{self.prefix}.outcome.{w}.>",
            f"{self.prefix}.client.*.{w}",
        )

    def agent_subscribe(self, worker: str) -> tuple[str, ...]:
        """The fleet subjects agent ``worker`` may receive on: its own inbox only."""
        return (self.worker_inbox(worker),)

    @property
    def all_agent_events(self) -> str:
        return f"{self.prefix}.agent.>"

    @property
    def all_acks(self) -> str:
        return f"{self.prefix}.ack.*"

    # -- coordinator -> agent (core NATS) ------------------------------------

    def assign(self, worker: str) -> str:
        return self._build("assign", worker=worker)

    def parse_assign(self, subject: str) -> str:
        """The worker named in a assign subject."""
        return self._parse_one("assign", subject)

    def cancel(self, worker: str) -> str:
        return self._build("cancel", worker=worker)

    def parse_cancel(self, subject: str) -> str:
        """The worker named in a cancel subject."""
        return self._parse_one("cancel", subject)

    def reregister(self, worker: str) -> str:
        """Where the coordinator asks an agent whose task set it lacks for its Register."""
        return self._build("reregister", worker=worker)

    def pace(self, worker: str) -> str:
        """Where the coordinator tells an agent how often to beat (``Pace``)."""
        return self._build("pace", worker=worker)

    def worker_inbox(self, worker: str) -> str:
        """Everything addressed to one agent, for a single subscription."""
        return f"{self.prefix}.worker.{token(worker)}.>"

    def parse_worker_inbox(self, subject: str) -> tuple[str, str]:
        """(worker, verb) of a subject under ``worker_inbox``; verb in ``WORKER_VERBS``."""
        for verb in WORKER_VERBS:
            with contextlib.suppress(SubjectError):
                return self._parse_one(verb, subject), verb
        raise SubjectError(f"nothing is served on {subject!r}")

    # -- coordinator -> clients (core NATS) ----------------------------------

    def run_updates(self, run_id: str) -> str:
        """``RunUpdate`` pushes for one run; a client subscribes before it submits."""
        return self._build("run_updates", run=run_id)

    def parse_run_updates(self, subject: str) -> str:
        """The run id of a run's update subject."""
        return self._parse_one("run_updates", subject)

    @property
    def all_run_updates(self) -> str:
        """Every run's updates: what the dashboard follows (a run's end is always here)."""
        return f"{self.prefix}.run.*"

    @property
    def all_client_inboxes(self) -> str:
        """Every client's inbox: node changes pushed to submitters, which the dashboard
        follows too (read-only)."""
        return f"{self.prefix}.client.*"

    def client_inbox(self, client_id: str) -> str:
        """One client's subject for the updates of all its runs (``Submit.notify``)."""
        return self._build("client_inbox", client=client_id)

    def parse_client_inbox(self, subject: str) -> str:
        """The client id of a client inbox."""
        return self._parse_one("client_inbox", subject)

    # -- agents -> clients (core NATS) ---------------------------------------

    def direct(self, inbox: str, worker: str) -> str:
        """Where ``worker`` answers the submitter of a one-node run itself (``Assignment.reply``
        names the client inbox): the worker's name is in the subject, so NATS permissions
        make it the sender's own."""
        return self._build("direct", client=self.parse_client_inbox(inbox), worker=worker)

    def direct_of(self, inbox: str) -> str:
        """What a client subscribes to for the direct answers to its runs."""
        return f"{inbox}.*"

    def parse_direct(self, subject: str) -> tuple[str, str]:
        """(client id, worker) of a direct answer's subject."""
        client, worker = self._parse("direct", subject)
        return client, worker

    # -- JetStream -----------------------------------------------------------

    def outcome(self, worker: str, run_id: str, node_id: str) -> str:
        """Where agent ``worker`` stores the one outcome of an attempt of ``run_id``'s node."""
        return self._build("outcome", worker=worker, run=run_id, node=node_id)

    def parse_outcome(self, subject: str) -> tuple[str, str, str]:
        """(worker, run id, node id) of one outcome's subject."""
        worker, run_id, node_id = self._parse("outcome", subject)
        return worker, run_id, node_id

    def worker_outcomes(self, worker: str) -> str:
        """Where an agent stores a ``Batch`` of outcomes that finished together. Under the
        outcome wildcard, so the same stream and consumer take it; one token shorter than
        a single outcome's subject, so the two never collide."""
        return self._build("worker_outcomes", worker=worker)

    def parse_worker_outcomes(self, subject: str) -> str:
        """The worker whose batch of outcomes this subject holds."""
        return self._parse_one("worker_outcomes", subject)

    def parse_outcome_sender(self, subject: str) -> str:
        """The worker named by an outcome subject of either kind (one, or a batch)."""
        with contextlib.suppress(SubjectError):
            return self.parse_outcome(subject)[0]
        with contextlib.suppress(SubjectError):
            return self.parse_worker_outcomes(subject)
        raise SubjectError(f"{subject!r} is no outcome subject of prefix {self.prefix!r}")

    def run_outcomes(self, run_id: str) -> str:
        """Every single outcome of one run, whichever worker stored it."""
        return f"{self.prefix}.outcome.*.{token(run_id)}.*"

    @property
    def all_outcomes(self) -> str:
        return f"{self.prefix}.outcome.>"

    @property
    def submit(self) -> str:
        return self._build("submit")

    def parse_submit(self, subject: str) -> None:
        """Nothing to read from the submission subject; SubjectError for another."""
        self._parse("submit", subject)

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
    def leader_bucket(self) -> str:
        """The coordinators' lease record and presence keys (``coordinator/lease.py``)."""
        return f"{self._upper}_LEADER"

    @property
    def pipelines_bucket(self) -> str:
        """Pipeline tracking records kept by users' ``NatsPipelineStorage`` (key: pipeline id)."""
        return f"{self._upper}_PIPELINES"

    @property
    def payloads_stream(self) -> str:
        return f"{self._upper}_PAYLOADS"

    @property
    def all_payloads(self) -> str:
        return f"{self.prefix}.payload.>"

    def payload_writer(self, user: str) -> str:
        """The payload subjects NATS user ``user`` may write (a permission pattern)."""
        return f"{self.prefix}.payload.{token(user)}.>"

    def payload_chunk(self, name: str, chunk: int) -> str:
        """Chunk ``chunk`` of the stored value ``name`` (``<writer>.<key>``)."""
        writer, _, key = name.partition(".")
        return self._build("payload_chunk", writer=writer, key=key, chunk=str(chunk))

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
        return self._build("ctl", verb=verb)

    def parse_ctl(self, subject: str) -> str:
        """The verb of a control subject; SubjectError for an unknown one."""
        verb = self._parse_one("ctl", subject)
        if verb not in CONTROL_VERBS:
            raise SubjectError(f"unknown control verb {verb!r}; expected one of {CONTROL_VERBS}")
        return verb

    @property
    def all_ctl(self) -> str:
        return f"{self.prefix}.ctl.*"
