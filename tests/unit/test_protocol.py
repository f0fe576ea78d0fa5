"""Wire protocol (shared/wire/protocol.py) and subject names (shared/wire/subjects.py)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.resources import ResourceRequest, WorkerSpec
from shared.wire.protocol import (
    Accept,
    Assignment,
    AttemptRef,
    Batch,
    Cancel,
    Deregister,
    ErrorInfo,
    Heartbeat,
    Outcome,
    Pace,
    PayloadRef,
    ProtocolError,
    Register,
    Reject,
    Reregister,
    Reserved,
    decode,
    decode_as,
    decode_each,
    encode,
    encode_each,
    join_encoded,
)
from shared.wire.subjects import MAX_TOKEN_LENGTH, Subjects, as_token, token

# -- strategies and examples --------------------------------------------------

tokens = st.from_regex(r"[A-Za-z0-9_-]{1,24}", fullmatch=True)
refs = st.builds(AttemptRef, run_id=tokens, node_id=tokens, attempt=st.integers(1, 10**6))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
times = st.floats(0, 4e9, allow_nan=False)

REF = AttemptRef(run_id="run-1", node_id="prep", attempt=1)
SPEC = WorkerSpec(name="gpu-box_1", cpu=8, ram_mb=32768, gpus=2, labels={"zone": "eu"})
ONE_GPU = ResourceRequest(cpu=2, ram_mb=1024, gpus=1)


def examples() -> list[Any]:
    error = ErrorInfo(type="ValueError", message="bad", traceback="Traceback ...")
    return [
        Register(
            spec=SPEC,
            agent_version="0.1.0",
            pid=42,
            started_at=1.7e9,
            heartbeat_interval=2.0,
            tasks=("app:heavy",),
            running=(REF,),
        ),
        Heartbeat(
            worker="gpu-box_1",
            started_at=1.7e9,
            seq=7,
            interval=2.0,
            capacity=SPEC,
            reserved=Reserved(cpu=2, ram_mb=1024, gpus={0: 1.0, 1: 0.25}, resources={"lic": 1}),
            cpu_percent=140.5,
            available_ram_mb=20000,
            running=(REF,),
            draining=True,
        ),
        Deregister(worker="gpu-box_1", reason="SIGTERM"),
        Reregister(reason="the coordinator lacks this agent's task set"),
        Pace(interval=16.0),
        Assignment(
            ref=REF,
            task_name="app.tasks:heavy",
            args=(1, "x", None, [1.5, {"k": True}]),
            kwargs={"big": None, "n": 3},
            arg_refs={"big": PayloadRef(name="w.run-1-prep-big", size=5 << 20, sha256="0" * 64)},
            labels={"retry_on_error": True, "max_retries": 3},
            request=ONE_GPU,
            gpu_devices=(1,),
            timeout=30.0,
        ),
        Accept(ref=REF, worker="gpu-box_1"),
        Reject(ref=REF, worker="gpu-box_1", code="capacity", reason="needs 2 cpu, 1 free"),
        Cancel(ref=REF, reason="run cancelled"),
        Outcome(
            ref=REF,
            worker="w",
            status="succeeded",
            return_value={"a": [1]},
            started_at=1,
            finished_at=2,
        ),
        Outcome(ref=REF, worker="w", status="failed", error=error, started_at=1, finished_at=1),
        Outcome(ref=REF, worker="w", status="timed_out", started_at=1, finished_at=31),
        Outcome(
            ref=REF,
            worker="w",
            status="succeeded",
            return_ref=PayloadRef(name="w.o", size=1, sha256="0" * 64),
            started_at=1,
            finished_at=2,
        ),
        Batch(items=(Cancel(ref=REF), Cancel(ref=REF.model_copy(update={"attempt": 2})))),
    ]


def failed(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ref": REF,
        "worker": "w",
        "status": "failed",
        "error": ErrorInfo(type="E"),
        "started_at": 1.0,
        "finished_at": 2.0,
    }
    return {**base, **changes}


# -- round trips --------------------------------------------------------------


@pytest.mark.parametrize("msg", examples(), ids=lambda m: m.type)
def test_round_trip(msg: Any) -> None:
    data = encode(msg)
    doc = json.loads(data)
    assert doc["type"] == msg.type
    assert doc["version"] == 1
    back = decode(data)
    assert back == msg
    assert type(back) is type(msg)
    assert decode_as(data, type(msg)) == msg


def test_every_message_type_has_an_example() -> None:
    from shared.wire.protocol import _MODELS

    assert {m.type for m in examples()} == set(_MODELS)


@given(
    ref=refs,
    args=st.lists(json_values, max_size=4),
    kwargs=st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), json_values),
    timeout=st.none() | st.floats(0.001, 1e6),
)
def test_assignment_round_trip(
    ref: AttemptRef, args: list[Any], kwargs: dict[str, Any], timeout: float | None
) -> None:
    msg = Assignment(
        ref=ref,
        task_name="m:f",
        args=tuple(args),
        kwargs=kwargs,
        request=ResourceRequest(),
        timeout=timeout,
    )
    assert decode_as(encode(msg), Assignment) == msg


@given(ref=refs, worker=tokens, value=json_values, start=times, spent=st.floats(0, 1e6))
def test_outcome_round_trip(
    ref: AttemptRef, worker: str, value: Any, start: float, spent: float
) -> None:
    msg = Outcome(
        ref=ref,
        worker=worker,
        status="succeeded",
        return_value=value,
        started_at=start,
        finished_at=start + spent,
    )
    back = decode_as(encode(msg), Outcome)
    assert back == msg
    assert back.duration == pytest.approx(spent, abs=1e-3)


@given(st.lists(refs, min_size=1, max_size=5))
def test_batch_round_trip(batch_refs: list[AttemptRef]) -> None:
    msg = Batch(items=tuple(Cancel(ref=r, reason="x") for r in batch_refs))
    assert decode(encode(msg)) == msg
    assert decode_each(encode(msg), Cancel) == msg.items


def test_decode_each_accepts_a_single_message() -> None:
    cancel = Cancel(ref=REF)
    assert decode_each(encode(cancel), Cancel) == (cancel,)


@given(st.lists(refs, min_size=1, max_size=5))
def test_encode_each_is_what_decode_each_reads(batch_refs: list[AttemptRef]) -> None:
    items = [Cancel(ref=r, reason="x") for r in batch_refs]
    data = encode_each(items)
    assert decode_each(data, Cancel) == tuple(items)
    assert data == join_encoded([encode(item) for item in items])
    if len(items) == 1:
        assert data == encode(items[0])
    else:
        assert decode(data) == Batch(items=tuple(items))


def test_join_encoded_refuses_nothing() -> None:
    with pytest.raises(ValueError, match="at least one"):
        join_encoded([])


def test_error_info_clipped_keeps_head_and_tail() -> None:
    small = ErrorInfo(type="E", message="m" * 10, traceback="t" * 10)
    assert small.clipped(20) is small
    big = ErrorInfo(type="E", message="a" * 500 + "b" * 500, traceback="T" * 50 + "end")
    clipped = big.clipped(200)
    assert clipped.type == "E"
    assert clipped.message.startswith("a" * 50)
    assert clipped.message.endswith("b" * 50)
    assert "900 characters clipped" in clipped.message
    assert clipped.traceback == big.traceback  # short enough on its own
    assert len(clipped.message) + len(clipped.traceback) < 300


def test_attempt_ref_key_and_hash() -> None:
    assert REF.key == "run-1.prep.1"
    assert {REF, AttemptRef(run_id="run-1", node_id="prep", attempt=1)} == {REF}


def test_messages_are_frozen() -> None:
    with pytest.raises(ValidationError):
        REF.attempt = 2  # type: ignore[misc]


# -- decode errors ------------------------------------------------------------


def valid_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(encode(Accept(ref=REF, worker="w")))
    return doc


@pytest.mark.parametrize(
    ("data", "kind", "text"),
    [
        (b"", "json", "not a JSON message"),
        (b"\xff\xfe\x00garbage", "json", "not a JSON message"),
        (b"{not json", "json", "not a JSON message"),
        (b"[1, 2]", "json", "JSON object, got list"),
        (b'"accept"', "json", "JSON object, got str"),
        (b"{}", "type", "no 'type' field"),
        (b'{"type": "launch"}', "type", "unknown message type 'launch'"),
        (b'{"type": ["accept"]}', "type", "unknown message type"),
        (b'{"type": null}', "type", "no 'type' field"),
    ],
)
def test_decode_rejects(data: bytes, kind: str, text: str) -> None:
    with pytest.raises(ProtocolError, match=text) as info:
        decode(data)
    assert info.value.kind == kind
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("msg", examples(), ids=lambda m: m.type)
def test_newer_version_is_named(msg: Any) -> None:
    doc = json.loads(encode(msg))
    doc["version"] = 99
    with pytest.raises(ProtocolError, match=r"version 99 is newer .* \(up to 1\)") as info:
        decode(json.dumps(doc).encode())
    assert info.value.kind == "version"


@pytest.mark.parametrize("version", [0, -1, "1x", 1.5, None, True])
def test_bad_version_is_invalid(version: Any) -> None:
    doc = {**valid_doc(), "version": version}
    with pytest.raises(ProtocolError, match="invalid 'accept' message: version") as info:
        decode(json.dumps(doc).encode())
    assert info.value.kind == "invalid"


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"worker": 5}, "worker: Input should be a valid string"),
        ({"worker": "a.b"}, "worker: Value error, name 'a.b' cannot be used"),
        ({"worker": ""}, "worker: Value error, an empty name"),
        ({"ref": {"run_id": "r", "node_id": "n", "attempt": 0}}, "ref.attempt: Input should be"),
        ({"ref": {"run_id": "r *", "node_id": "n", "attempt": 1}}, r"ref.run_id: .*' \*'"),
        ({"ref": "r.n.1"}, "ref: Input should be an object"),
        ({"sneaky": 1}, "sneaky: Extra inputs are not permitted"),
        ({"ref": {"run_id": "r", "node_id": "n", "attempt": 1, "x": 0}}, "ref.x: Extra inputs"),
    ],
)
def test_invalid_fields_are_summarised(change: dict[str, Any], text: str) -> None:
    doc = {**valid_doc(), **change}
    with pytest.raises(ProtocolError, match=text) as info:
        decode(json.dumps(doc).encode())
    assert info.value.kind == "invalid"
    assert "errors.pydantic.dev" not in str(info.value)


def test_missing_fields_are_listed() -> None:
    with pytest.raises(ProtocolError, match="ref: Field required; task_name: Field required"):
        decode(b'{"type": "assign"}')


def test_long_error_lists_are_cut() -> None:
    doc = {"type": "register", **{f"x{i}": i for i in range(10)}}
    with pytest.raises(ProtocolError, match=r"and \d+ more$"):
        decode(json.dumps(doc).encode())


def test_decode_as_refuses_another_type() -> None:
    with pytest.raises(ProtocolError, match="expected a 'outcome' message, got 'accept'"):
        decode_as(encode(Accept(ref=REF, worker="w")), Outcome)


def test_decode_each_refuses_a_mixed_batch() -> None:
    batch = Batch(items=(Cancel(ref=REF), Accept(ref=REF, worker="w")))
    with pytest.raises(ProtocolError, match="expected 'cancel' messages, got 'accept'"):
        decode_each(encode(batch), Cancel)


@pytest.mark.parametrize(
    "items",
    [[], [{"type": "batch", "items": [valid_doc()]}]],
    ids=["empty", "nested"],
)
def test_batch_shape_rules(items: list[Any]) -> None:
    with pytest.raises(ProtocolError, match="invalid 'batch' message"):
        decode(json.dumps({"type": "batch", "items": items}).encode())


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_decode_raises_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data)


@given(st.sampled_from(examples()), st.data())
def test_decode_of_a_damaged_message_raises_only_protocol_error(
    msg: Any, data: st.DataObject
) -> None:
    doc = json.loads(encode(msg))
    key = data.draw(st.sampled_from(sorted(doc)))
    doc[key] = data.draw(json_values)
    with contextlib.suppress(ProtocolError):
        decode(json.dumps(doc).encode())


# -- message rules ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        (failed(status="succeeded"), "succeeded outcome cannot carry an error"),
        (failed(error=None), "failed outcome must carry an error"),
        (failed(return_value=1), "failed outcome cannot carry a return value"),
        (failed(status="cancelled", error=None, return_value=[]), "cancelled outcome cannot"),
        (
            failed(status="timed_out", return_ref=PayloadRef(name="w.o", size=1, sha256="0" * 64)),
            "timed_out",
        ),
        (
            failed(
                status="succeeded",
                error=None,
                return_value=1,
                return_ref=PayloadRef(name="w.o", size=1, sha256="0" * 64),
            ),
            "not both",
        ),
        (failed(finished_at=0.5), "before started_at"),
        (failed(status="succeeded", error=None, return_value=float("nan")), "finite number"),
        (failed(status="succeeded", error=None, return_value={"a": (1, 2)}), "JSON value"),
        (failed(status="lost"), "status"),
    ],
)
def test_outcome_rules(fields: dict[str, Any], text: str) -> None:
    with pytest.raises(ValidationError, match=text):
        Outcome(**fields)


@pytest.mark.parametrize(
    "fields",
    [
        failed(),
        failed(status="cancelled", error=None),
        failed(status="timed_out"),
        failed(status="succeeded", error=None),
        failed(status="succeeded", error=None, return_value=None),
    ],
)
def test_outcome_allowed(fields: dict[str, Any]) -> None:
    assert decode_as(encode(Outcome(**fields)), Outcome) == Outcome(**fields)


@pytest.mark.parametrize(
    ("gpus", "devices", "ok"),
    [
        (0, (), True),
        (0, (0,), False),
        (0.5, (1,), True),
        (0.5, (), False),
        (0.5, (0, 1), False),
        (2, (0, 3), True),
        (2, (0,), False),
        (2, (1, 1), False),
    ],
)
def test_assignment_devices_match_request(gpus: float, devices: tuple[int, ...], ok: bool) -> None:
    def build() -> Assignment:
        request = ResourceRequest(gpus=gpus)
        return Assignment(ref=REF, task_name="t", request=request, gpu_devices=devices)

    if ok:
        assert build().gpu_devices == devices
    else:
        with pytest.raises(ValidationError, match="device"):
            build()


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("0", True),
        ("1", False),
        ("data", True),
        ("other", False),
        ("-0", False),
        ("items.1", True),
        ("items.2", False),
        ("data.0", False),
    ],
)
def test_assignment_arg_refs_name_an_argument(key: str, ok: bool) -> None:
    def build() -> Assignment:
        ref = {key: PayloadRef(name="w.p", size=0, sha256="0" * 64)}
        return Assignment(
            ref=REF,
            task_name="t",
            args=(None,),
            kwargs={"data": None, "items": [1, None]},
            arg_refs=ref,
            request=ONE_GPU.merged(gpus=0),
        )

    if ok:
        assert key in build().arg_refs
    else:
        with pytest.raises(ValidationError, match="neither an index, a kwarg"):
            build()


def test_assignment_resolved_puts_values_where_arg_refs_point() -> None:
    ref = PayloadRef(name="w.p", size=0, sha256="0" * 64)
    a = Assignment(
        ref=REF,
        task_name="t",
        args=(None, 2),
        kwargs={"data": None, "items": [1, None, 3], "a.0": None},
        arg_refs={"0": ref, "data": ref, "items.1": ref, "a.0": ref},
        request=ONE_GPU.merged(gpus=0),
    )
    done = a.resolved({"0": "x", "data": {"k": 1}, "items.1": "y", "a.0": "z"})
    assert done.args == ("x", 2)
    assert done.kwargs == {"data": {"k": 1}, "items": [1, "y", 3], "a.0": "z"}
    assert done.arg_refs == {}
    assert a.kwargs["items"] == [1, None, 3]  # the original is left as it was


def test_heartbeat_capacity_must_be_its_own() -> None:
    with pytest.raises(ValidationError, match="capacity names 'gpu-box_1', sender is 'other'"):
        Heartbeat(
            worker="other",
            started_at=1,
            seq=0,
            interval=1,
            capacity=SPEC,
            cpu_percent=0,
            available_ram_mb=0,
        )


@pytest.mark.parametrize("name", ["", "gpu1.lab", "a b"])
def test_register_needs_a_subject_safe_name(name: str) -> None:
    with pytest.raises(ValidationError, match="NATS subject"):
        Register(
            spec=SPEC.model_copy(update={"name": name}),
            agent_version="1",
            pid=1,
            started_at=0,
            heartbeat_interval=1,
        )


def test_reject_codes_are_closed() -> None:
    with pytest.raises(ValidationError, match="code"):
        Reject(ref=REF, worker="w", code="tired")


# -- subjects -----------------------------------------------------------------


def matches(pattern: str, subject: str) -> bool:
    """NATS wildcard semantics: '*' is one token, '>' one or more trailing tokens."""
    want, got = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(got) > i
        if i >= len(got) or part not in ("*", got[i]):
            return False
    return len(want) == len(got)


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("a.b", "a.b", True),
        ("a.*.c", "a.b.d", False),
    ],
)
def test_matcher(pattern: str, subject: str, expected: bool) -> None:
    assert matches(pattern, subject) is expected


def test_default_subjects() -> None:
    s = Subjects()
    assert s.register("w1") == "fleet.agent.register.w1"
    assert s.heartbeat("w1") == "fleet.agent.heartbeat.w1"
    assert s.deregister("w1") == "fleet.agent.deregister.w1"
    assert s.assign("w1") == "fleet.worker.w1.assign"
    assert s.cancel("w1") == "fleet.worker.w1.cancel"
    assert s.worker_inbox("w1") == "fleet.worker.w1.>"
    assert s.ack("w1") == "fleet.ack.w1"
    assert s.outcome("w1", "r1", "n1") == "fleet.outcome.w1.r1.n1"
    assert s.worker_outcomes("w1") == "fleet.outcome.w1._batch"
    assert s.run_outcomes("r1") == "fleet.outcome.*.r1.*"
    assert s.submit == "fleet.submit"
    assert s.ctl("workers") == "fleet.ctl.workers"
    assert s.all_heartbeats == "fleet.agent.heartbeat.*"
    assert s.streams() == {
        "FLEET_OUTCOMES": ("fleet.outcome.>",),
        "FLEET_SUBMISSIONS": ("fleet.submit",),
    }
    assert (s.runs_bucket, s.nodes_bucket, s.payloads_stream) == (
        "FLEET_RUNS",
        "FLEET_NODES",
        "FLEET_PAYLOADS",
    )
    assert s.payload_chunk("client.k1", 3) == "fleet.payload.client.k1.3"
    assert s.payload_writer("agent-a1") == "fleet.payload.agent-a1.>"
    assert s.node_key("r1", "n1") == "r1.n1"
    assert matches(s.run_nodes_key("r1"), s.node_key("r1", "n1"))
    assert not matches(s.run_nodes_key("r1"), s.node_key("r2", "n1"))


def test_custom_prefix() -> None:
    s = Subjects("prod.fleet-2")
    assert s.assign("w") == "prod.fleet-2.worker.w.assign"
    assert s.outcomes_stream == "PROD_FLEET_2_OUTCOMES"
    assert s.nodes_bucket == "PROD_FLEET_2_NODES"


@pytest.mark.parametrize(
    "prefix", ["", "Fleet", "a_b", "a..b", ".a", "a.", "a b", "a.*", "a.>", "$SYS"]
)
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid subject prefix"):
        Subjects(prefix)


def test_unknown_control_verb() -> None:
    with pytest.raises(ValueError, match="unknown control verb 'wokers'"):
        Subjects().ctl("wokers")


@pytest.mark.parametrize("name", ["w", "gpu-box_01", "A" * MAX_TOKEN_LENGTH, "0", "-", "RUN_7f3a"])
def test_good_tokens(name: str) -> None:
    assert token(name) == name


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("", "empty name"),
        ("a.b", r"contains '\.'"),
        ("a b", "contains ' '"),
        ("a\tb", "contains"),
        ("*", r"contains '\*'"),
        (">", "contains '>'"),
        ("a.*>", r"contains '\*\.>'"),
        ("naïve", "contains 'ï'"),
        ("x" * (MAX_TOKEN_LENGTH + 1), "longer than"),
    ],
)
def test_bad_tokens(name: str, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        token(name)
    with pytest.raises(ValueError, match=text):
        Subjects().assign(name)


def test_token_refuses_non_strings() -> None:
    with pytest.raises(TypeError):
        token(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpu1.lab.example", "gpu1-lab-example"),
        ("host", "host"),
        ("...", "worker"),
        ("a  b", "a-b"),
    ],
)
def test_as_token(text: str, expected: str) -> None:
    assert as_token(text) == expected


@given(st.text(max_size=300))
def test_as_token_always_gives_a_token(text: str) -> None:
    assert token(as_token(text))


def all_subjects(s: Subjects, worker: str, run: str, node: str) -> dict[str, str]:
    return {
        "register": s.register(worker),
        "heartbeat": s.heartbeat(worker),
        "deregister": s.deregister(worker),
        "assign": s.assign(worker),
        "cancel": s.cancel(worker),
        "reregister": s.reregister(worker),
        "ack": s.ack(worker),
        "outcome": s.outcome(worker, run, node),
        "worker_outcomes": s.worker_outcomes(worker),
        "submit": s.submit,
        **{f"ctl.{verb}": s.ctl(verb) for verb in ("workers", "runs", "status", "cancel")},
    }


WILDCARDS = {
    "all_registers": {"register"},
    "all_heartbeats": {"heartbeat"},
    "all_deregisters": {"deregister"},
    "all_agent_events": {"register", "heartbeat", "deregister"},
    "all_acks": {"ack"},
    "all_outcomes": {"outcome", "worker_outcomes"},
    "all_ctl": {"ctl.workers", "ctl.runs", "ctl.status", "ctl.cancel"},
}


@given(worker=tokens, run=tokens, node=tokens)
def test_wildcards_catch_exactly_their_kind(worker: str, run: str, node: str) -> None:
    s = Subjects()
    built = all_subjects(s, worker, run, node)
    for attr, kinds in WILDCARDS.items():
        pattern = getattr(s, attr)
        caught = {kind for kind, subject in built.items() if matches(pattern, subject)}
        assert caught == kinds, attr
    inbox = {k for k, v in built.items() if matches(s.worker_inbox(worker), v)}
    assert inbox == {"assign", "cancel", "reregister"}
    assert {k for k, v in built.items() if matches(s.run_outcomes(run), v)} == {"outcome"}


def identity(kind: str, worker: str, run: str, node: str) -> tuple[str, ...]:
    """The part of the ids a subject of this kind is built from."""
    if kind == "outcome":
        return (worker, run, node)
    if kind == "submit" or kind.startswith("ctl."):
        return ()
    return (worker,)


@given(a=st.tuples(tokens, tokens, tokens), b=st.tuples(tokens, tokens, tokens))
def test_no_two_subjects_collide(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    s = Subjects()
    first, second = all_subjects(s, *a), all_subjects(s, *b)
    for kind, subject in first.items():
        for other_kind, other in second.items():
            same = kind == other_kind and identity(kind, *a) == identity(other_kind, *b)
            assert (subject == other) is same, (kind, other_kind)


def test_no_wildcard_leaks_into_another_worker() -> None:
    s = Subjects()
    assert not matches(s.worker_inbox("w1"), s.assign("w10"))
    assert not matches(s.run_outcomes("r1"), s.outcome("w", "r10", "n"))
    assert not matches(s.run_outcomes("r"), s.outcome("w", "r-x", "n"))


def test_other_prefix_never_overlaps() -> None:
    a, b = Subjects("fleet"), Subjects("fleet2")
    for pattern in (a.all_agent_events, a.all_outcomes, a.all_acks, a.all_ctl):
        assert not any(matches(pattern, x) for x in all_subjects(b, "w", "r", "n").values())


def test_size_chunks_keep_each_group_under_the_limit() -> None:
    from shared.wire.protocol import size_chunks

    assert size_chunks([], len, 10) == []
    assert size_chunks([b"aaaa", b"bbbb", b"cc", b"d"], len, 6) == [
        [b"aaaa"],
        [b"bbbb", b"cc"],
        [b"d"],
    ]
    assert size_chunks([b"x" * 20, b"y"], len, 6) == [[b"x" * 20], [b"y"]]  # too big: alone
