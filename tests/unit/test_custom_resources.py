"""Custom resources an agent offers: ``--resources`` and ``resources = {...}`` in ``fleet up``'s
config, parsed by one rule, carried in the WorkerSpec, shown in the tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.resources import WorkerSpec
from shared.wire.protocol import Heartbeat, Register, decode_as, encode
from shared.wire.runs import WorkerView
from taskiq_fleet.cluster_config import AgentConfig, ConfigError, load_config, parse_config
from taskiq_fleet.tables import workers_table
from worker_agent.cgroups import HostFacts
from worker_agent.inventory import detect, parse_resources

ROOT = Path(__file__).resolve().parents[2]
HOST = HostFacts(cpus=4, ram_bytes=8 << 30, hostname="box", system="Linux", machine="x86_64")


@pytest.mark.parametrize(
    ("text", "amounts"),
    [
        (None, {}),
        ("", {}),
        ("licenses=4", {"licenses": 4}),
        (" licenses = 4 , fpga=1,tokens=0.5", {"licenses": 4, "fpga": 1, "tokens": 0.5}),
        ("seats=0", {"seats": 0}),
    ],
)
def test_parse_resources(text: str | None, amounts: dict[str, float]) -> None:
    assert parse_resources(text) == amounts


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("licenses=-1", "licenses amount '-1' must be a non-negative number"),
        ("=3", "'=3' has no name"),
        ("fpga", "'fpga' is not name=amount"),
        ("licenses=x", "licenses amount 'x' is not a number"),
        ("licenses=", "licenses amount '' is not a number"),
        ("licenses=inf", "licenses amount 'inf' must be a non-negative number"),
        ("licenses=0.0001", "licenses=0.0001 is finer than 0.001"),
        ("licenses=1,licenses=2", "licenses given twice"),
        ("Licenses=1", "invalid custom resource name 'Licenses'"),
        ("cpu=1", "'cpu' is built in; state it with --cpus"),
        ("cpus=1", "'cpus' is built in; state it with --cpus"),
        ("ram=1", "'ram' is built in; state it with --ram-mb"),
        ("ram_mb=1", "'ram_mb' is built in; state it with --ram-mb"),
        ("gpu=1", "'gpu' is built in; state it with --gpus"),
        ("gpus=1", "'gpus' is built in; state it with --gpus"),
        ("gpu_mem_mb=1", "'gpu_mem_mb' is built in; state it with --gpus"),
    ],
)
def test_parse_resources_errors_name_the_flag_the_item_and_an_example(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=r"expected e\.g\. 'licenses=4,fpga=1'") as caught:
        parse_resources(text)
    message = str(caught.value)
    assert message.startswith(f"invalid --resources {text!r}: {why}"), message
    assert "\n" not in message


def test_detected_spec_offers_the_resources_through_register_and_heartbeat(
    tmp_path: Path,
) -> None:
    inventory = detect(tmp_path, host=HOST, gpu_query=list, resources="licenses=2,fpga=1")
    spec = inventory.spec
    assert spec.resources == {"licenses": 2, "fpga": 1}
    register = Register(spec=spec, agent_version="1", pid=1, started_at=1.0, heartbeat_interval=1.0)
    assert decode_as(encode(register), Register).spec.resources == {"licenses": 2, "fpga": 1}
    beat = Heartbeat(
        worker="box", started_at=1.0, seq=1, interval=1.0, capacity=spec,
        cpu_percent=0.0, available_ram_mb=1024,
    )  # fmt: skip
    assert decode_as(encode(beat), Heartbeat).capacity.resources == {"licenses": 2, "fpga": 1}


def test_detect_checks_resources_before_probing(tmp_path: Path) -> None:
    def no_probe() -> list[Any]:
        raise AssertionError("probed the host before checking the flags")

    with pytest.raises(ValueError, match="invalid --resources"):
        detect(tmp_path, host=HOST, gpu_query=no_probe, resources="fpga")


# -- fleet up's config ------------------------------------------------------------------------


def agent(**table: Any) -> AgentConfig:
    (parsed,) = parse_config({"agent": [{"name": "a", **table}]}, source="c.toml")
    return parsed


def test_config_resources_as_a_table_or_a_string_become_the_agent_flag() -> None:
    table = agent(resources={"licenses": 2, "tokens": 0.5})
    text = agent(resources="licenses=2, tokens=0.5")
    assert dict(table.resources) == dict(text.resources) == {"licenses": 2, "tokens": 0.5}
    options = table.agent_options()
    assert options[options.index("--resources") + 1] == "licenses=2,tokens=0.5"
    assert "--resources" not in agent().agent_options()


def test_the_example_cluster_gives_the_big_memory_box_two_licenses() -> None:
    offered = {a.name: dict(a.resources) for a in load_config(ROOT / "examples" / "cluster.toml")}
    assert offered == {"cpu-small": {}, "bigmem": {"licenses": 2}, "gpu-a100": {}}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"licenses": -1}, "resources: invalid --resources 'licenses=-1'"),
        ({"cpu": 2}, "'cpu' is built in; state it with --cpus"),
        ({"licenses": "two"}, "resources: licenses: must be a number, got str 'two'"),
        ({"licenses": True}, "resources: licenses: must be a number, got bool True"),
        ("fpga", "'fpga' is not name=amount"),
        (3, "resources: must be a table { licenses = 2 } or 'k=N,...', got int 3"),
    ],
)
def test_bad_config_resources_are_one_line_naming_the_agent(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        agent(resources=value)
    text = str(caught.value)
    assert text.startswith("c.toml: agent 1 ('a'): resources: "), text
    assert message in text
    assert "\n" not in text


# -- what operators see -------------------------------------------------------------------------


def test_workers_table_shows_custom_resources_used_of_total() -> None:
    spec = WorkerSpec(name="w", cpu=4, ram_mb=1024, resources={"licenses": 2, "fpga": 1})
    busy = WorkerView(
        spec=spec,
        reserved={"cpu": 1, "ram_mb": 0, "licenses": 1, "fpga": 0},
        free={"cpu": 3, "ram_mb": 1024, "licenses": 1, "fpga": 1},
    )
    draining = WorkerView(spec=spec.model_copy(update={"name": "x"}), draining=True)
    lines = workers_table([busy, draining], now=0.0).splitlines()
    assert lines[0].endswith("resources used/total")
    assert lines[2].endswith("fpga=0/1,licenses=1/2")
    assert lines[3].endswith("fpga=-/1,licenses=-/2")
