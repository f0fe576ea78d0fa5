"""``fleet up``'s configuration and command lines, checked without starting a process."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from taskiq_fleet import GPUDevice
from taskiq_fleet.cli import main
from taskiq_fleet.local_cluster import (
    DEFAULT_APP,
    AgentConfig,
    ClusterError,
    ConfigError,
    LocalCluster,
    identical_agents,
    load_config,
    parse_config,
)
from taskiq_fleet.up_cli import gpu_text

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cluster.toml"
URL = "nats://127.0.0.1:4999"


def agents(*tables: dict[str, Any], **top: Any) -> tuple[AgentConfig, ...]:
    return parse_config({**top, "agent": list(tables)}, source="c.toml")


# -- parsing -----------------------------------------------------------------------------------


def test_the_example_config_has_a_small_a_big_memory_and_a_gpu_agent() -> None:
    small, bigmem, gpu = load_config(EXAMPLE)
    assert (small.name, small.cpus, small.ram_mb, small.gpus) == ("cpu-small", 2.0, 2048, None)
    assert (bigmem.ram_mb or 0) > (small.ram_mb or 0) > 0
    assert (gpu.name, gpu.gpus, dict(gpu.labels)) == ("gpu-a100", "1xA100:40960", {"gpu": "true"})
    assert {a.app for a in (small, bigmem, gpu)} == {DEFAULT_APP}


def test_defaults_name_app_and_detection() -> None:
    (first, second) = agents({}, {"name": "b", "app": "mine:broker"}, app="top:broker")
    assert first == AgentConfig(name="agent-1", app="top:broker")
    assert (second.name, second.app) == ("b", "mine:broker")
    assert (first.cpus, first.ram_mb, first.gpus, first.headroom) == (None, None, None, None)
    (only,) = parse_config({"agent": [{}]}, default_app="cli:broker")
    assert only.app == "cli:broker"


def test_labels_and_headroom_as_tables_or_strings() -> None:
    table, text = agents(
        {"labels": {"gpu": True, "rack": 7, "zone": "eu"}, "headroom": {"cpu": 0.5, "ram_mb": 512}},
        {"name": "t", "labels": "zone=eu,tier=spot", "headroom": "10%"},
    )
    assert dict(table.labels) == {"gpu": "true", "rack": "7", "zone": "eu"}
    assert table.headroom == "cpu=0.5,ram_mb=512"
    assert (dict(text.labels), text.headroom) == ({"zone": "eu", "tier": "spot"}, "10%")


def test_gpus_zero_means_none_and_a_spec_is_kept_as_written() -> None:
    none, spec = agents({"gpus": 0}, {"name": "g", "gpus": "2xL4:24576"})
    assert (none.gpus, spec.gpus) == ("0", "2xL4:24576")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"agents": []}, "c.toml: unknown key 'agents' (known: app, agent"),
        ({}, "c.toml: no [[agent]] table"),
        ({"agent": []}, "c.toml: no [[agent]] table"),
        ({"agent": 3}, "'agent' must be an array of tables"),
        ({"app": "no-colon", "agent": [{}]}, "c.toml: app: must look like 'module:broker'"),
        ({"agent": [{"cpu": 2}]}, "agent 1 ('agent-1'): unknown key 'cpu' (known: name, app, cpus"),
        ({"agent": [{"name": "a"}, {"name": "a"}]}, "agent 2: name 'a' is used twice"),
        ({"agent": [{"name": "a.b"}]}, "agent 1 ('a.b'): name: name 'a.b' cannot be used"),
        ({"agent": [{"name": 5}]}, "agent 1: name: must be a string, got int 5"),
        ({"agent": [{"cpus": -1}]}, "cpus: must be > 0, got -1"),
        ({"agent": [{"cpus": True}]}, "cpus: must be a number of cores, got bool True"),
        ({"agent": [{"cpus": "4"}]}, "cpus: must be a number of cores, got str '4'"),
        ({"agent": [{"cpus": 0.0001}]}, "cpus: cpus=0.0001 is finer than 0.001"),
        ({"agent": [{"ram_mb": 1.5}]}, "ram_mb: must be a whole number of MB, got float 1.5"),
        ({"agent": [{"ram_mb": 0}]}, "ram_mb: must be > 0, got 0"),
        ({"agent": [{"gpus": 2}]}, "gpus: must be a spec like '1xA100:40960' or 0 for none"),
        ({"agent": [{"gpus": "2xL4:lots"}]}, "gpus: invalid --gpus '2xL4:lots': memory 'lots'"),
        ({"agent": [{"labels": {"-bad": "x"}}]}, "labels: invalid label key '-bad'"),
        ({"agent": [{"labels": {"k": "a,b"}}]}, "labels: k: value 'a,b' must be non-empty"),
        ({"agent": [{"labels": {"k": [1]}}]}, "labels: k: must be a string, number or boolean"),
        ({"agent": [{"labels": "novalue"}]}, "labels: invalid --labels 'novalue'"),
        ({"agent": [{"labels": 3}]}, "labels: must be a table"),
        ({"agent": [{"headroom": "cpu=lots"}]}, "headroom: invalid --headroom 'cpu=lots'"),
        ({"agent": [{"headroom": {"gpu": 1}}]}, "unknown dimension 'gpu'"),
        ({"agent": [{"headroom": 5}]}, "headroom: must be 'cpu=0.5,ram_mb=1024', '10%'"),
        ({"agent": [{"app": "x"}]}, "agent 1 ('agent-1'): app: must look like 'module:broker'"),
    ],
)
def test_every_mistake_is_one_line_naming_file_agent_and_key(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, source="c.toml")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unreadable_or_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*missing\.toml"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[agent]]\nname = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML: .*line 2"):
        load_config(bad)


def test_identical_agents() -> None:
    assert [a.name for a in identical_agents(3)] == ["agent-1", "agent-2", "agent-3"]
    assert {a.app for a in identical_agents(2, "m:b")} == {"m:b"}
    with pytest.raises(ConfigError, match=">= 1"):
        identical_agents(0)
    with pytest.raises(ConfigError, match="--app: must look like"):
        identical_agents(1, "nope")


# -- command lines -----------------------------------------------------------------------------


def test_command_line_of_each_agent_of_the_example() -> None:
    cluster = LocalCluster(load_config(EXAMPLE), prefix="demo", python="py")
    fleet = ["py", "-m", "taskiq_fleet.cli"]
    common = ["--heartbeat", "0.5", "--drain-timeout", "10", "--log-format", "console"]
    small, bigmem, gpu = cluster.agents
    head = [*fleet, "agent", DEFAULT_APP, "--nats", URL, "--prefix", "demo"]
    assert cluster.agent_command(small, URL) == [
        *head, "--name", "cpu-small", "--cpus", "2", "--ram-mb", "2048",
        "--labels", "size=small", *common,
    ]  # fmt: skip
    assert cluster.agent_command(bigmem, URL) == [
        *head, "--name", "bigmem", "--cpus", "8", "--ram-mb", "12288",
        "--resources", "licenses=2", "--labels", "size=large,memory=high", *common,
    ]  # fmt: skip
    assert cluster.agent_command(gpu, URL) == [
        *head, "--name", "gpu-a100", "--cpus", "4", "--ram-mb", "6144",
        "--gpus", "1xA100:40960", "--labels", "gpu=true", *common,
    ]  # fmt: skip
    assert cluster.coordinator_command(URL) == [
        *fleet, "coordinator", "--nats", URL, "--prefix", "demo", "--policy", "hybrid",
        "--log-format", "console",
    ]  # fmt: skip


def test_options_are_exact_and_detection_is_left_alone() -> None:
    detect = AgentConfig(name="d")
    assert detect.agent_options() == ["--name", "d"]
    stated = AgentConfig(name="s", cpus=0.25, ram_mb=512, gpus="0", headroom="cpu=0.5")
    assert stated.agent_options() == [
        "--name", "s", "--cpus", "0.25", "--ram-mb", "512", "--gpus", "0",
        "--headroom", "cpu=0.5",
    ]  # fmt: skip
    assert AgentConfig(name="big", cpus=1_000_000.0).agent_options()[2:] == ["--cpus", "1000000"]


def test_the_agents_run_with_this_interpreter_by_default() -> None:
    cluster = LocalCluster(1, policy="spread", heartbeat=0.2, drain_timeout=1.5)
    command = cluster.agent_command(cluster.agents[0], URL)
    assert command[:3] == [sys.executable, "-m", "taskiq_fleet.cli"]
    assert command[command.index("--heartbeat") + 1] == "0.2"
    assert command[command.index("--drain-timeout") + 1] == "1.5"
    assert "spread" in cluster.coordinator_command(URL)


def test_a_cluster_refuses_what_cannot_work_before_starting() -> None:
    with pytest.raises(ConfigError, match="unique"):
        LocalCluster([AgentConfig(name="a"), AgentConfig(name="a")])
    with pytest.raises(ConfigError, match="unknown policy 'fastest'"):
        LocalCluster(1, policy="fastest")
    with pytest.raises(ConfigError, match="at least one agent"):
        LocalCluster([])
    idle = LocalCluster(1)
    with pytest.raises(ClusterError, match="not been started"):
        _ = idle.nats_url
    with pytest.raises(ClusterError, match="not been started"):
        _ = idle.state_dir
    assert LocalCluster(1, nats_url=URL).nats_url == URL


def test_gpu_text_counts_alike_devices() -> None:
    devices = (
        GPUDevice(index=0, model="L4", memory_mb=24576),
        GPUDevice(index=1, model="L4", memory_mb=24576),
        GPUDevice(index=2, model="A100"),
    )
    assert gpu_text(devices) == "2xL4:24576,1xA100"
    assert gpu_text(()) == ""


# -- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--config", "{bad}"], "fleet up: error: {bad}: agent 1 ('x'): unknown key 'cpu'"),
        (["--config", "{missing}"], "fleet up: error: cannot read {missing}"),
        (["--nats", "http://x"], "fleet up: error: --nats: 'http://x' is not a NATS URL"),
        (["--nats", URL, "--port", "5000"], "fleet up: error: --port is for the embedded"),
        (["--app", "nocolon"], "fleet up: error: --app: must look like 'module:broker'"),
    ],
)
def test_fleet_up_reports_a_bad_command_line_in_one_line_with_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[agent]]\nname = "x"\ncpu = 2\n')
    paths = {"bad": str(bad), "missing": str(tmp_path / "missing.toml")}
    argv = [arg.format(**paths) for arg in argv]
    assert main(["up", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(**paths)), err
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == [bad]  # nothing started, nothing written


def test_fleet_up_refuses_agents_and_config_together(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["up", "--agents", "2", "--config", "x.toml"])
    assert caught.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["up", "--agents", "0"])


async def test_a_state_dir_in_use_is_refused_and_left_alone(tmp_path: Path) -> None:
    import fcntl

    (tmp_path / "fleet.lock").write_text("4242\n")
    with (tmp_path / "fleet.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        cluster = LocalCluster(1, state_dir=tmp_path, nats_url=URL)
        with pytest.raises(ClusterError, match=r"in use by another cluster \(pid 4242\)"):
            await cluster.start()
    assert (tmp_path / "fleet.lock").read_text() == "4242\n"
    assert cluster.pids() == {}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--agents", "x"], "argument --agents: expected a number, got 'x'"),
        (["--port", "70000"], "argument --port: must be <= 65535, got 70000"),
        (["--port", "-1"], "argument --port: must be >= 0, got -1"),
    ],
)
def test_fleet_up_refuses_bad_numbers_while_parsing(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["up", *argv])
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "command", [["up"], ["coordinator"], ["agent", "m:b"], ["workers"], ["submit", "m:d"]]
)
def test_a_bad_prefix_is_refused_while_parsing_by_every_command(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main([*command, "--prefix", "Bad.Prefix"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "argument --prefix: invalid subject prefix 'Bad.Prefix'" in err
    assert "Traceback" not in err


def test_a_cluster_refuses_a_bad_prefix() -> None:
    with pytest.raises(ConfigError, match=r"invalid subject prefix 'A\.B'"):
        LocalCluster(1, prefix="A.B")


async def test_a_state_dir_that_cannot_be_created_is_reported_and_left_alone(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cluster = LocalCluster(1, state_dir=blocker / "state", nats_url=URL)
    with pytest.raises(ClusterError, match=r"cannot create state dir .*a-file/state"):
        await cluster.start()
    assert not cluster.state_removed  # not reported as a removed temporary dir
    assert cluster.pids() == {}
    assert blocker.is_file()
