"""The wire in one place: every subject built and parsed by ``Subjects``, every message a
versioned model (``SubmitBatch`` too), an outcome's value sent as encoded once."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.dag import Dag, Node, RunOptions
from shared.wire.codec import join_items, size_chunks, with_field
from shared.wire.protocol import (
    AttemptRef,
    Outcome,
    PayloadRef,
    ProtocolError,
    decode,
    encode,
)
from shared.wire.protocol import (
    size_chunks as protocol_size_chunks,
)
from shared.wire.runs import Refused, Submit, SubmitBatch, batch_of_submits, parse_submits
from shared.wire.subjects import (
    AGENT_KINDS,
    CONTROL_VERBS,
    WORKER_VERBS,
    SubjectError,
    Subjects,
)

PREFIXES = ["fleet", "prod.fleet-2"]


def matches(pattern: str, subject: str) -> bool:
    """NATS wildcard semantics: '*' is one token, '>' one or more trailing tokens."""
    want, got = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(got) > i
        if i >= len(got) or part not in ("*", got[i]):
            return False
    return len(want) == len(got)


WORKER_KINDS = ["register", "heartbeat", "deregister", "ack", "assign", "cancel"]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("kind", [*WORKER_KINDS, "worker_outcomes"])
def test_worker_subjects_parse_back(prefix: str, kind: str) -> None:
    s = Subjects(prefix)
    subject = getattr(s, kind)("gpu-1")
    assert getattr(s, f"parse_{kind}")(subject) == "gpu-1"
    assert s.kind_of(subject) == kind


@pytest.mark.parametrize("prefix", PREFIXES)
def test_other_subjects_parse_back(prefix: str) -> None:
    s = Subjects(prefix)
    assert s.parse_outcome(s.outcome("w1", "run1", "node-a")) == ("w1", "run1", "node-a")
    assert s.parse_run_updates(s.run_updates("run1")) == "run1"
    assert s.parse_client_inbox(s.client_inbox("c0ffee")) == "c0ffee"
    assert s.kind_of(s.client_inbox("c0ffee")) == "client_inbox"
    s.parse_submit(s.submit)
    assert s.kind_of(s.submit) == "submit"
    for verb in CONTROL_VERBS:
        assert s.parse_ctl(s.ctl(verb)) == verb
    for verb in ("assign", "cancel"):
        assert s.parse_worker_inbox(getattr(s, verb)("w")) == ("w", verb)


@pytest.mark.parametrize(
    "subject",
    [
        "fleet.agent.register",  # too short
        "fleet.agent.register.a.b",  # too long
        "other.agent.register.a",  # another prefix
        "fleetx.agent.register.a",
        "fleet.agent.heartbeat.a",  # another kind
    ],
)
def test_parse_refuses_other_subjects(subject: str) -> None:
    with pytest.raises(SubjectError):
        Subjects().parse_register(subject)


def test_parse_refuses_unknown_verbs_and_foreign_subjects() -> None:
    s = Subjects()
    with pytest.raises(SubjectError, match="unknown control verb"):
        s.parse_ctl("fleet.ctl.reboot")
    with pytest.raises(SubjectError):
        s.parse_worker_inbox("fleet.worker.w.explode")
    with pytest.raises(SubjectError):
        s.kind_of("elsewhere.submit")


@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_subject_an_agent_publishes_on_names_it(prefix: str) -> None:
    """Outcomes too: one subject kind per message an agent sends, its worker read back,
    and only its own name matched by the permissions ``agent_publish`` lists."""
    s = Subjects(prefix)
    sent = {kind: getattr(s, kind)("a1") for kind in AGENT_KINDS}
    for kind, subject in sent.items():
        assert s.parse_sender(subject) == (kind, "a1")
    outcomes = [s.outcome("a1", "run1", "node-a"), s.worker_outcomes("a1")]
    for subject in outcomes:
        assert s.parse_outcome_sender(subject) == "a1"
    assert s.kind_of(outcomes[0]) == "outcome"
    assert s.kind_of(outcomes[1]) == "worker_outcomes"
    mine = s.agent_publish("a1")
    for subject in [*sent.values(), *outcomes]:
        assert any(matches(pattern, subject) for pattern in mine), subject
        other = subject.replace(".a1", ".a2")
        assert not any(matches(pattern, other) for pattern in mine), other
        assert matches(s.all_outcomes, subject) == (subject in outcomes)
    assert all(matches(s.agent_subscribe("a1")[0], getattr(s, v)("a1")) for v in WORKER_VERBS)
    assert not matches(s.agent_subscribe("a1")[0], s.assign("a2"))


def test_run_outcomes_catch_one_run_from_any_worker() -> None:
    s = Subjects()
    assert s.run_outcomes("r1") == "fleet.outcome.*.r1.*"
    assert matches(s.run_outcomes("r1"), s.outcome("a2", "r1", "n"))
    assert not matches(s.run_outcomes("r1"), s.outcome("r1", "r10", "n"))
    assert not matches(s.run_outcomes("r1"), s.worker_outcomes("r1"))


@pytest.mark.parametrize(
    "subject",
    [
        "fleet.outcome.r1.n1",  # before the worker was in it: one token short
        "fleet.outcome._batch.a1",  # the batch subject before the worker came first
        "fleet.agent.register.a1",
        "fleet.outcome.a1.r1.n1.x",
    ],
)
def test_outcome_sender_refuses_other_subjects(subject: str) -> None:
    with pytest.raises(SubjectError):
        Subjects().parse_outcome_sender(subject)


@pytest.mark.parametrize(
    "subject",
    [
        "fleet.worker.a1.assign",
        "fleet.submit",
        "fleet.agent.heartbeat.",
        "fleet.agent.heartbeat.a1.x",
        "fleet.agent.bogus.a1",
        "fleet.agent.heartbeat.a$1",
        "fleetXagent.heartbeat.a1",
        "prod.fleet.agent.heartbeat.a1",
        "fleet.ack.a1.x",
    ],
)
def test_parse_sender_refuses_what_no_agent_sends(subject: str) -> None:
    with pytest.raises(SubjectError):
        Subjects().parse_sender(subject)


def test_client_inbox_is_a_valid_notify_subject() -> None:
    inbox = Subjects("prod.fleet").client_inbox("abc")
    submit = _submit("r1").model_copy(update={"notify": inbox})
    assert Submit.model_validate_json(encode(submit)).notify == inbox


def _submit(run_id: str, **changes: Any) -> Submit:
    dag = Dag(nodes=(Node(id="task", task="mod:f", args=(1,), outputs=("result",)),))
    return Submit(run_id=run_id, dag=dag, progress=False).model_copy(update=changes)


def _rich_submit() -> Submit:
    """Fields away from their defaults at every level, beside nodes left at theirs."""
    plain = Node(id="plain", task="mod:f", outputs=("p",))
    rich = Node.model_validate(
        {
            "id": "rich",
            "task": "mod:g",
            "args": [0, "", None, False, [], {}],
            "kwargs": {"k": 0.0},
            "inputs": {"x": "p", "y": ["p", "q"]},
            "outputs": ["r"],
            "after": ["plain"],
            "request": {
                "cpu": 0.0,
                "ram_mb": 512,
                "gpus": 1.0,
                "gpu_models": ["A100"],
                "resources": {"licence": 1.0},
                "required": [{"key": "zone", "op": "in", "values": ["a", "b"]}],
                "preferred": [
                    {"selector": {"key": "tier", "op": "equals", "values": ["fast"]}, "weight": 2}
                ],
            },
            "retry": {"max_retries": 3, "delay": 0.5, "retry_on": ["ValueError"]},
            "timeout": 9.5,
            "priority": -2,
            "labels": {"team": "x"},
        }
    )
    dag = Dag(inputs=("q",), nodes=(plain, rich))
    return Submit(
        run_id="rich",
        name="n",
        dag=dag,
        inputs={"q": [1, {"a": None}]},
        options=RunOptions(max_parallel=2, on_error="continue"),
        submitted_at=12.5,
        notify="_INBOX.client.abc",
        progress=False,
        fresh=True,
    )


def test_a_submission_is_sent_without_its_defaults_and_read_back_whole() -> None:
    """Fields at their defaults stay home (a node's request, retry policy and the rest were
    most of a kiq's bytes); what a receiver reads is the same submission, and a message
    with every field spelled out, as earlier clients sent, reads the same."""
    submit = _rich_submit()
    data = encode(submit)
    assert data.startswith(b'{"version":1,"type":"submit",')
    sent = json.loads(data)
    assert set(sent["dag"]["nodes"][0]) == {"id", "task", "outputs"}
    assert parse_submits(data) == [submit]
    assert parse_submits(submit.model_dump_json().encode()) == [submit]
    assert len(data) < len(submit.model_dump_json())


def test_submit_batch_round_trip_without_decoding_items() -> None:
    items = [_submit("a"), _submit("b")]
    data = SubmitBatch.join([encode(item) for item in items])
    assert SubmitBatch.model_validate_json(data) == SubmitBatch(items=tuple(items))
    assert json.loads(data)["version"] == SubmitBatch.VERSION
    assert parse_submits(data) == items


def test_submit_batch_reads_what_older_clients_sent() -> None:
    items = [encode(_submit("a")), encode(_submit("b"))]
    old = b'{"type":"submit_batch","version":1,"items":[' + b",".join(items) + b"]}"
    assert batch_of_submits(items) == old
    assert [s.run_id for s in parse_submits(old) if isinstance(s, Submit)] == ["a", "b"]


def test_submit_batch_refuses_a_bad_item_alone() -> None:
    bad = json.loads(encode(_submit("bad")))
    bad["dag"]["nodes"] = []
    data = SubmitBatch.join([encode(_submit("good")), json.dumps(bad).encode()])
    good, refused = parse_submits(data)
    assert isinstance(good, Submit)
    assert isinstance(refused, Refused)
    assert refused.run_id == "bad"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"nope", "json"),
        (b'{"type":"submit_batch","version":1,"items":[]}', "invalid"),
        (b'{"type":"submit_batch","version":9,"items":[{}]}', "version"),
    ],
)
def test_submit_batch_errors(data: bytes, kind: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_submits(data)
    assert info.value.kind == kind


def test_submit_batch_needs_items() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SubmitBatch.join([])


def _outcome(value: Any) -> Outcome:
    ref = AttemptRef(run_id="r", node_id="n", attempt=1)
    return Outcome(
        ref=ref, worker="w", status="succeeded", return_value=value, started_at=1, finished_at=2
    )


def test_outcome_sends_its_value_as_encoded() -> None:
    plain = _outcome({"a": [1, 2]})
    carried = plain.with_value_json(b'{"a": [1, 2]}')
    data = encode(carried)
    assert b'"return_value":{"a": [1, 2]}' in data
    assert decode(data) == plain == carried
    assert carried.value_json() == b'{"a": [1, 2]}'
    assert plain.value_json() == b'{"a":[1,2]}'
    assert _outcome(None).value_json() is None


def test_outcome_moved_to_a_reference_drops_the_carried_bytes() -> None:
    carried = _outcome([1]).with_value_json(b"[1]")
    moved = carried.model_copy(
        update={"return_value": None, "return_ref": PayloadRef(name="w.x", size=3, sha256="0" * 64)}
    )
    sent = json.loads(encode(moved))
    assert sent["return_value"] is None
    assert sent["return_ref"] == {
        "name": "w.x",
        "size": 3,
        "sha256": "0" * 64,
        "chunk_size": 262144,
    }


def test_codec_helpers() -> None:
    assert join_items("batch", 1, [b"{}", b"[]"]) == b'{"type":"batch","version":1,"items":[{},[]]}'
    assert with_field(b"{}", "v", b"1") == b'{"v":1}'
    assert with_field(b'{"a":1}', "v", b"[2]") == b'{"a":1,"v":[2]}'
    with pytest.raises(ValueError, match="object"):
        with_field(b"[]", "v", b"1")
    assert size_chunks([3, 3, 3], lambda n: n, 6) == [[3, 3], [3]]
    assert protocol_size_chunks is size_chunks
