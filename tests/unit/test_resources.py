"""Validation rules of the resource model (shared/resources.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.labels import LabelSelector, Op
from shared.resources import (
    BUILTIN_RESOURCES,
    GPUDevice,
    ResourceRequest,
    WorkerSpec,
    check_custom_name,
    to_milli,
)

# -- milli-unit conversion ----------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "milli"),
    [(0, 0), (0.001, 1), (0.25, 250), (0.1, 100), (1.5, 1500), (2.0, 2000), (64.125, 64125)],
)
def test_to_milli_exact(amount: float, milli: int) -> None:
    assert to_milli(amount, "x") == milli


@pytest.mark.parametrize("amount", [0.0001, 0.0005, 1.0005, 2.00001, 0.3333])
def test_to_milli_refuses_finer_than_milli(amount: float) -> None:
    with pytest.raises(ValueError, match=r"finer than 0\.001"):
        to_milli(amount, "cpu")


# -- ResourceRequest: accepted values -----------------------------------------


def test_request_defaults() -> None:
    r = ResourceRequest()
    assert (r.cpu, r.ram_mb, r.gpus, r.resources, r.required, r.preferred, r.policy) == (
        1.0,
        0,
        0.0,
        {},
        (),
        (),
        None,
    )
    assert r.wants_gpu is False


@pytest.mark.parametrize(
    "fields",
    [
        {"cpu": 0.001},
        {"cpu": 2.5, "ram_mb": 1024},
        {"gpus": 0.25},
        {"gpus": 0.999},
        {"gpus": 1},
        {"gpus": 4.0},
        {"gpus": 1, "gpu_models": ("A100", "H100"), "gpu_mem_mb": 40000},
        {"resources": {"licenses": 2}},
        {"resources": {"licenses": 0.5, "fpga_slots": 1}},
        {"cpu": 0, "ram_mb": 0},
        {"policy": "spread"},
    ],
)
def test_request_accepts_valid(fields: dict[str, Any]) -> None:
    r = ResourceRequest(**fields)
    for name, value in fields.items():
        assert getattr(r, name) == value


@pytest.mark.parametrize(("gpus", "wants"), [(0, False), (0.25, True), (1, True), (3, True)])
def test_request_wants_gpu(gpus: float, wants: bool) -> None:
    assert ResourceRequest(gpus=gpus).wants_gpu is wants


# -- ResourceRequest: refused values ------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cpu": -1}, "greater than or equal to 0"),
        ({"cpu": -0.001}, "greater than or equal to 0"),
        ({"ram_mb": -1}, "greater than or equal to 0"),
        ({"gpus": -0.5}, "greater than or equal to 0"),
        ({"gpus": 1, "gpu_mem_mb": -1}, "greater than or equal to 0"),
        ({"resources": {"licenses": -1}}, "negative"),
        ({"cpu": float("nan")}, "finite"),
        ({"cpu": float("inf")}, "finite"),
    ],
)
def test_request_refuses_negative_or_non_finite(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ResourceRequest(**fields)


@pytest.mark.parametrize("gpus", [1.5, 2.25, 1.001, 3.5])
def test_request_refuses_fractional_gpus_above_one(gpus: float) -> None:
    with pytest.raises(ValidationError, match="whole number"):
        ResourceRequest(gpus=gpus)


@pytest.mark.parametrize(
    "fields",
    [
        {"cpu": 0.0005},
        {"cpu": 1.0001},
        {"gpus": 0.0001},
        {"gpus": 0.2505},
        {"resources": {"licenses": 0.0001}},
    ],
)
def test_request_refuses_finer_than_milli(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=r"finer than 0\.001"):
        ResourceRequest(**fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"cpus": 2},
        {"ram": 1024},
        {"gpu": 1},
        {"memory_mb": 10},
        {"licenses": 2},
    ],
)
def test_request_refuses_unknown_resource_names(fields: dict[str, Any]) -> None:
    name = next(iter(fields))
    with pytest.raises(ValidationError, match=f"unknown resource name.*'{name}'"):
        ResourceRequest(**fields)


def test_request_unknown_name_is_value_error() -> None:
    # ValidationError is a ValueError subclass, so callers can catch either.
    with pytest.raises(ValueError, match="cpus"):
        ResourceRequest.model_validate({"cpus": 2})


@pytest.mark.parametrize("name", sorted(BUILTIN_RESOURCES))
def test_request_refuses_custom_names_colliding_with_builtins(name: str) -> None:
    with pytest.raises(ValidationError, match="built-in resource"):
        ResourceRequest(resources={name: 1})


@pytest.mark.parametrize("name", ["Licenses", "1licenses", "lic-enses", "lic enses", "", "x" * 64])
def test_request_refuses_malformed_custom_names(name: str) -> None:
    with pytest.raises(ValidationError, match="invalid custom resource name"):
        ResourceRequest(resources={name: 1})


@pytest.mark.parametrize("name", ["licenses", "fpga_slots", "a1", "x" * 63])
def test_check_custom_name_accepts(name: str) -> None:
    assert check_custom_name(name) == name


@pytest.mark.parametrize(
    "fields",
    [{"gpu_models": ("A100",)}, {"gpu_mem_mb": 1000}, {"gpus": 0, "gpu_models": ("A100",)}],
)
def test_request_refuses_gpu_constraints_without_gpus(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="gpus=0"):
        ResourceRequest(**fields)


def test_request_is_frozen() -> None:
    r = ResourceRequest(cpu=2)
    with pytest.raises(ValidationError):
        r.cpu = 3  # type: ignore[misc]


def test_request_key_and_hash_are_canonical() -> None:
    a = ResourceRequest(cpu=2, resources={"licenses": 1})
    b = ResourceRequest(resources={"licenses": 1}, cpu=2.0)
    c = ResourceRequest(cpu=3, resources={"licenses": 1})
    assert a.key == b.key
    assert hash(a) == hash(b)
    assert a.key != c.key


def test_request_merged_revalidates() -> None:
    r = ResourceRequest(cpu=2, gpus=1)
    assert r.merged(gpus=2).gpus == 2
    assert r.merged(gpus=2).cpu == 2
    with pytest.raises(ValidationError, match="whole number"):
        r.merged(gpus=1.5)


def test_request_selectors_round_trip() -> None:
    sel = LabelSelector(key="zone", op=Op.IN, values=("eu", "us"))
    r = ResourceRequest(required=(sel,))
    again = ResourceRequest.model_validate_json(r.model_dump_json())
    assert again == r
    assert again.required[0].values == ("eu", "us")


# -- WorkerSpec ---------------------------------------------------------------


def test_worker_shorthand_of_the_documents() -> None:
    spec = WorkerSpec.model_validate({"cpu_cores": 8, "ram_gb": 32, "labels": {"gpu": True}})
    assert spec.cpu == 8.0
    assert spec.ram_mb == 32 * 1024
    assert spec.labels == {"gpu": "true"}
    assert spec.gpus == ()
    assert spec.name == ""


def test_worker_fractional_ram_gb() -> None:
    assert WorkerSpec.model_validate({"ram_gb": 0.5}).ram_mb == 512


def test_worker_anonymous_gpu_count() -> None:
    spec = WorkerSpec.model_validate({"cpu": 4, "gpus": 2})
    assert [(g.index, g.model, g.memory_mb) for g in spec.gpus] == [(0, "gpu", 0), (1, "gpu", 0)]


def test_worker_explicit_devices() -> None:
    spec = WorkerSpec.model_validate(
        {
            "gpus": [
                {"index": 3, "model": "A100", "memory_mb": 40960},
                {"index": 7, "model": "H100", "memory_mb": 81920},
            ],
            "resources": {"licenses": 2},
        }
    )
    assert [(g.index, g.model, g.memory_mb) for g in spec.gpus] == [
        (3, "A100", 40960),
        (7, "H100", 81920),
    ]
    assert spec.resources == {"licenses": 2}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cpu_cores": 8, "ram_gbs": 4}, "unknown worker resource name.*ram_gbs"),
        ({"cpus": 8}, "unknown worker resource name.*cpus"),
        ({"gpu": 1}, "unknown worker resource name.*'gpu'"),
        ({"licenses": 2}, "unknown worker resource name.*licenses"),
    ],
)
def test_worker_refuses_unknown_names(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WorkerSpec.model_validate(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cpu": -1}, "greater than or equal to 0"),
        ({"cpu_cores": -2}, "greater than or equal to 0"),
        ({"ram_mb": -1}, "greater than or equal to 0"),
        ({"resources": {"licenses": -1}}, "negative"),
        ({"gpus": [{"index": -1, "model": "A100"}]}, "greater than or equal to 0"),
        ({"gpus": [{"index": 0, "model": "A100", "memory_mb": -5}]}, "greater than or equal to 0"),
        ({"gpus": [{"index": 0, "model": ""}]}, "at least 1 character"),
    ],
)
def test_worker_refuses_negative_or_empty(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WorkerSpec.model_validate(data)


@pytest.mark.parametrize("name", sorted(BUILTIN_RESOURCES))
def test_worker_refuses_custom_names_colliding_with_builtins(name: str) -> None:
    with pytest.raises(ValidationError, match="built-in resource"):
        WorkerSpec.model_validate({"resources": {name: 1}})


def test_worker_refuses_duplicate_device_indexes() -> None:
    with pytest.raises(ValidationError, match="unique"):
        WorkerSpec.model_validate(
            {"gpus": [{"index": 1, "model": "A100"}, {"index": 1, "model": "H100"}]}
        )


def test_worker_refuses_custom_finer_than_milli() -> None:
    with pytest.raises(ValidationError, match=r"finer than 0\.001"):
        WorkerSpec.model_validate({"resources": {"licenses": 0.0001}})


def test_worker_refuses_cpu_finer_than_milli() -> None:
    with pytest.raises(ValidationError, match=r"finer than 0\.001"):
        WorkerSpec(cpu=0.0001)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"gpu": True}, {"gpu": "true"}),
        ({"gpu": False}, {"gpu": "false"}),
        ({"cores": 8}, {"cores": "8"}),
        ({"gen": 2.0}, {"gen": "2"}),
        ({"ratio": 1.5}, {"ratio": "1.5"}),
        ({"zone": "eu"}, {"zone": "eu"}),
    ],
)
def test_worker_labels_normalised(labels: dict[str, Any], expected: dict[str, str]) -> None:
    assert WorkerSpec.model_validate({"labels": labels}).labels == expected


def test_gpu_device_is_strict() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        GPUDevice.model_validate({"index": 0, "model": "A100", "vram": 3})


def test_an_unknown_policy_is_refused_with_the_request() -> None:
    with pytest.raises(ValueError, match="unknown placement policy 'tetris'"):
        ResourceRequest(policy="tetris")


def test_a_submission_naming_an_unknown_policy_is_refused_not_scheduled() -> None:
    from shared.wire.runs import Refused, parse_submits

    data = (
        b'{"type": "submit", "run_id": "r1", "dag": {"nodes": [{"id": "a", "task": "t",'
        b' "request": {"policy": "tetris"}}]}}'
    )
    (found,) = parse_submits(data)
    assert isinstance(found, Refused)
    assert found.run_id == "r1"
    assert "unknown placement policy" in found.error
