"""The DAG model a client submits (shared/dag.py) and the submission check (shared/wire/runs.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.dag import Dag, Node, RetryPolicy, RunOptions, check_inputs
from shared.wire.runs import Submit


def node(node_id: str, **fields: Any) -> Node:
    return Node(id=node_id, task="t", **fields)


def diamond() -> Dag:
    """top -> (left, right) -> bottom, values flowing by name."""
    return Dag(
        nodes=(
            node("top", inputs={"x": "seed"}, outputs=("t",)),
            node("left", inputs={"v": "t"}, outputs=("l",)),
            node("right", inputs={"v": "t"}, outputs=("r",)),
            node("bottom", inputs={"a": "l", "b": "r"}, outputs=("out",)),
        ),
        inputs=("seed",),
    )


def fan_out() -> Dag:
    return Dag(
        nodes=(
            node("src", outputs=("s",)),
            node("a", inputs={"v": "s"}),
            node("b", inputs={"v": "s"}),
            node("c", after=("src",)),
            node("lone"),
        )
    )


# -- validation --------------------------------------------------------------------------------

INVALID_DAGS: list[Any] = [
    pytest.param(
        {"nodes": (node("a"), node("a"))},
        "node id 'a' is used twice",
        id="duplicate-node-id",
    ),
    pytest.param(
        {"nodes": (node("a", outputs=("o",)), node("b", outputs=("o",)))},
        "output 'o' of node 'b' is also produced by node 'a'",
        id="duplicate-output",
    ),
    pytest.param(
        {"nodes": (node("a", outputs=("x",)),), "inputs": ("x",)},
        "output 'x' of node 'a' is also produced by an external input",
        id="output-clashes-with-external-input",
    ),
    pytest.param(
        {"nodes": (node("a"),), "inputs": ("x", "x")},
        "external inputs named twice: ['x', 'x']",
        id="duplicate-external-input",
    ),
    pytest.param(
        {"nodes": (node("a", inputs={"p": "nope"}),)},
        "node 'a' takes p='nope', which no node produces and which is not an external input",
        id="input-names-unknown-output",
    ),
    pytest.param(
        {"nodes": (node("a", after=("ghost",)),)},
        "node 'a' runs after unknown node 'ghost'",
        id="after-names-unknown-node",
    ),
    pytest.param(
        {"nodes": (node("a", after=("a",)),)},
        "the DAG has a cycle: a -> a",
        id="self-loop-by-after",
    ),
    pytest.param(
        {"nodes": (node("a", inputs={"p": "o"}, outputs=("o",)),)},
        "the DAG has a cycle: a -> a",
        id="self-loop-by-data",
    ),
    pytest.param(
        {
            "nodes": (
                node("a", after=("b",)),
                node("b", after=("c",)),
                node("c", after=("a",)),
            )
        },
        "the DAG has a cycle: a -> c -> b -> a",
        id="three-cycle-in-flow-order",
    ),
    pytest.param(
        {
            "nodes": (
                node("start", outputs=("s",)),
                node("x", inputs={"s": "s", "y": "yv"}, outputs=("xv",)),
                node("y", inputs={"x": "xv"}, outputs=("yv",)),
                node("tail", after=("y",)),
            )
        },
        "the DAG has a cycle: x -> y -> x",
        id="cycle-behind-an-acyclic-entry",
    ),
]


@pytest.mark.parametrize(("fields", "message"), INVALID_DAGS)
def test_invalid_dag_is_refused_with_a_message_naming_the_problem(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Dag(**fields)
    assert message in str(caught.value)


def test_all_naming_problems_are_reported_together() -> None:
    with pytest.raises(ValidationError) as caught:
        Dag(nodes=(node("a", after=("ghost",)), node("a", inputs={"p": "nope"})))
    text = str(caught.value)
    assert "node id 'a' is used twice" in text
    assert "runs after unknown node 'ghost'" in text
    assert "takes p='nope'" in text


def test_a_cycle_is_only_reported_for_a_well_named_dag() -> None:
    # Naming problems come first: the cycle check needs every name resolved.
    with pytest.raises(ValidationError) as caught:
        Dag(nodes=(node("a", after=("a",)), node("b", after=("ghost",))))
    assert "unknown node 'ghost'" in str(caught.value)
    assert "cycle" not in str(caught.value)


def test_empty_dag_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 1 item"):
        Dag(nodes=())


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param(
            {"inputs": {"p": "o"}, "kwargs": {"p": 1}},
            "node 'n': ['p'] given both as kwargs and as inputs",
            id="kwarg-and-input",
        ),
        pytest.param(
            {"outputs": ("o", "o")}, "node 'n' names an output twice: ['o', 'o']", id="output-twice"
        ),
    ],
)
def test_inconsistent_node_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        node("n", **fields)
    assert message in str(caught.value)


@pytest.mark.parametrize("bad_id", ["a.b", "a b", "a*", ""])
def test_node_id_must_be_a_subject_token(bad_id: str) -> None:
    with pytest.raises(ValidationError):
        node(bad_id)


def test_node_task_must_be_named() -> None:
    with pytest.raises(ValidationError):
        Node(id="n", task="")


# -- structure ---------------------------------------------------------------------------------


def test_levels_of_a_diamond() -> None:
    assert diamond().levels() == [["top"], ["left", "right"], ["bottom"]]


def test_levels_of_a_fan_out() -> None:
    assert fan_out().levels() == [["src", "lone"], ["a", "b", "c"]]


def test_levels_of_a_chain_are_one_node_each() -> None:
    dag = Dag(nodes=(node("c", after=("b",)), node("b", after=("a",)), node("a")))
    assert dag.levels() == [["a"], ["b"], ["c"]]


def test_levels_cover_every_node_once() -> None:
    dag = diamond()
    flat = [n for level in dag.levels() for n in level]
    assert sorted(flat) == sorted(n.id for n in dag.nodes)


def test_upstream_and_downstream_of_a_diamond() -> None:
    dag = diamond()
    assert dag.upstream == {
        "top": (),
        "left": ("top",),
        "right": ("top",),
        "bottom": ("left", "right"),
    }
    assert dag.downstream == {
        "top": ("left", "right"),
        "left": ("bottom",),
        "right": ("bottom",),
        "bottom": (),
    }


def test_upstream_merges_data_and_ordering_without_duplicates() -> None:
    dag = Dag(
        nodes=(
            node("a", outputs=("x", "y")),
            node("b", inputs={"p": "x", "q": "y"}, after=("a",)),
        )
    )
    assert dag.upstream["b"] == ("a",)
    assert dag.downstream["a"] == ("b",)


def test_external_inputs_are_not_upstream_nodes() -> None:
    dag = diamond()
    assert dag.upstream["top"] == ()
    assert dag.producers == {"t": "top", "l": "left", "r": "right", "out": "bottom"}


def test_fan_out_downstream_includes_ordering_edges() -> None:
    assert fan_out().downstream["src"] == ("a", "b", "c")


# -- retry policy ------------------------------------------------------------------------------


def test_delay_without_backoff_is_constant() -> None:
    policy = RetryPolicy(max_retries=3, delay=2.0)
    assert [policy.delay_for(n) for n in (1, 2, 3)] == [2.0, 2.0, 2.0]


def test_delay_grows_with_backoff() -> None:
    policy = RetryPolicy(max_retries=4, delay=1.0, backoff=2.0)
    assert [policy.delay_for(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]


def test_delay_is_capped_at_max_delay() -> None:
    policy = RetryPolicy(max_retries=10, delay=1.0, backoff=3.0, max_delay=5.0)
    assert [policy.delay_for(n) for n in (1, 2, 3, 8)] == [1.0, 3.0, 5.0, 5.0]


def test_zero_delay_stays_zero() -> None:
    assert RetryPolicy(max_retries=1, jitter=1.0).delay_for(1, draw=0.99) == 0.0


@pytest.mark.parametrize(
    ("draw", "expected"),
    [(0.0, 7.5), (0.5, 10.0), (0.25, 8.75), (0.999, 12.495)],
)
def test_jitter_moves_the_delay_by_up_to_its_share(draw: float, expected: float) -> None:
    policy = RetryPolicy(max_retries=1, delay=10.0, jitter=0.25)
    assert policy.delay_for(1, draw=draw) == pytest.approx(expected)


@pytest.mark.parametrize("draw", [i / 20 for i in range(20)])
def test_jitter_stays_within_bounds_of_the_capped_delay(draw: float) -> None:
    policy = RetryPolicy(max_retries=5, delay=4.0, backoff=2.0, max_delay=10.0, jitter=0.5)
    for retry in range(1, 6):
        base = min(10.0, 4.0 * 2.0 ** (retry - 1))
        delay = policy.delay_for(retry, draw=draw)
        assert base * 0.5 <= delay <= base * 1.5


def test_full_jitter_never_goes_negative() -> None:
    policy = RetryPolicy(max_retries=1, delay=3.0, jitter=1.0)
    assert policy.delay_for(1, draw=0.0) == 0.0


@pytest.mark.parametrize(
    "fields",
    [{"max_retries": -1}, {"delay": -1}, {"backoff": 0.5}, {"jitter": 1.5}, {"max_delay": -1}],
)
def test_retry_policy_refuses_out_of_range_values(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy(**fields)


@pytest.mark.parametrize(
    ("retry_on", "error_type", "expected"),
    [
        ((), "ValueError", True),
        ((), None, True),
        (("ValueError",), "ValueError", True),
        (("ValueError",), "builtins.ValueError", True),
        (("ValueError",), "app.errors.ValueError", True),
        (("app.errors.Flaky",), "app.errors.Flaky", True),
        (("app.errors.Flaky",), "Flaky", False),
        (("app.errors.Flaky",), "other.Flaky", False),
        (("ValueError",), "KeyError", False),
        (("ValueError",), "builtins.KeyError", False),
        (("ValueError",), "ValueErrorish", False),
        (("ValueError",), None, True),
    ],
)
def test_retries_filters_by_full_or_short_error_name(
    retry_on: tuple[str, ...], error_type: str | None, expected: bool
) -> None:
    assert RetryPolicy(max_retries=1, retry_on=retry_on).retries(error_type) is expected


# -- run options and inputs --------------------------------------------------------------------


@pytest.mark.parametrize("fields", [{"max_parallel": 0}, {"timeout": 0}, {"on_error": "ignore"}])
def test_run_options_refuse_bad_values(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RunOptions(**fields)


def test_check_inputs_accepts_exactly_the_dag_inputs() -> None:
    check_inputs(diamond(), {"seed"})


def test_check_inputs_names_missing_and_unknown() -> None:
    dag = Dag(nodes=(node("a", inputs={"p": "x", "q": "y"}),), inputs=("x", "y"))
    with pytest.raises(ValueError, match=r"missing external input\(s\) \['y'\]") as caught:
        check_inputs(dag, {"x", "z"})
    assert "unknown input(s) ['z']; the DAG takes ['x', 'y']" in str(caught.value)


def test_submit_with_all_inputs_is_accepted() -> None:
    submit = Submit(run_id="r1", dag=diamond(), inputs={"seed": 3})
    assert submit.inputs == {"seed": 3}


def test_submit_missing_an_input_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"missing external input\(s\) \['seed'\]"):
        Submit(run_id="r1", dag=diamond())


def test_submit_with_an_unknown_input_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        Submit(run_id="r1", dag=diamond(), inputs={"seed": 1, "extra": 2})
    assert "unknown input(s) ['extra']; the DAG takes ['seed']" in str(caught.value)


def test_submit_input_given_by_reference_counts_as_given() -> None:
    submit = Submit(
        run_id="r1",
        dag=diamond(),
        input_refs={"seed": {"name": "w.payload-1", "size": 10, "sha256": "0" * 64}},
    )
    assert submit.input_refs["seed"].name == "w.payload-1"


def test_submit_input_given_inline_and_by_reference_is_refused() -> None:
    with pytest.raises(ValidationError, match="given both inline and by reference"):
        Submit(
            run_id="r1",
            dag=diamond(),
            inputs={"seed": 1},
            input_refs={"seed": {"name": "w.payload-1", "size": 10, "sha256": "0" * 64}},
        )


def test_submit_run_id_must_be_a_subject_token() -> None:
    with pytest.raises(ValidationError):
        Submit(run_id="r.1", dag=diamond(), inputs={"seed": 1})


REF = {"name": "client.k1", "size": 3, "sha256": "0" * 64}


def test_arg_refs_name_an_argument_by_position_or_keyword() -> None:
    node = Node(id="n", task="t", args=(None, 1), kwargs={"k": None}, arg_refs={"0": REF, "k": REF})
    assert sorted(node.arg_refs) == ["0", "k"]
    for key in ("2", "other"):
        with pytest.raises(ValidationError, match="neither an argument's position"):
            Node(id="n", task="t", args=(None, 1), kwargs={"k": None}, arg_refs={key: REF})


def test_a_batch_member_takes_no_arg_refs() -> None:
    with pytest.raises(ValidationError, match="batch member's arguments travel inline"):
        Node(id="n", task="t", args=(None,), batch={"size": 2}, arg_refs={"0": REF})
