"""Host inventory of a worker agent (worker_agent/inventory.py, worker_agent/cgroups.py).

cgroup readers run against fake ``/sys/fs/cgroup`` and ``/proc`` trees built in
``tmp_path``; the last tests compare ``detect(Path("/"))`` with this machine's own
files, read here independently.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import socket
import sys
import types
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]
import pytest
from pydantic import ValidationError

from shared.resources import GPUDevice
from worker_agent.cgroups import (
    MIB,
    HostFacts,
    Membership,
    cgroup_chain,
    cpu_limit,
    detect_cpu,
    detect_ram_mb,
    memory_limit,
    parse_cfs,
    parse_cpu_max,
    parse_memory_limit_in_bytes,
    parse_memory_max,
    parse_proc_cgroup,
    usable_cpus,
)
from worker_agent.inventory import (
    DetectedGPU,
    Headroom,
    Share,
    auto_labels,
    detect,
    detect_gpus,
    parse_gpu_spec,
    parse_headroom,
    parse_labels,
    query_nvml,
    short_model,
)

GIB = 1024 * MIB
V1_UNLIMITED = "9223372036854771712\n"
HOST = HostFacts(cpus=8, ram_bytes=32 * GIB, hostname="box1", system="Linux", machine="x86_64")
A100 = DetectedGPU(0, "NVIDIA A100-SXM4-40GB", 40960)
H100 = DetectedGPU(1, "NVIDIA H100 80GB HBM3", 81559)


def put(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def no_gpus() -> list[DetectedGPU]:
    raise ImportError("No module named 'pynvml'")


def two_gpus() -> list[DetectedGPU]:
    return [A100, H100]


# -- cgroup file contents ------------------------------------------------------------------


def test_proc_cgroup_v2() -> None:
    member = parse_proc_cgroup("0::/system.slice/agent.service\n")
    assert member == Membership(unified="/system.slice/agent.service", v1={})


def test_proc_cgroup_v1_and_hybrid() -> None:
    text = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc/x\n1:name=systemd:/\n0::/\n\n"
    member = parse_proc_cgroup(text)
    assert member.unified == "/"
    assert dict(member.v1) == {
        "memory": "/docker/abc",
        "cpu": "/docker/abc/x",
        "cpuacct": "/docker/abc/x",
        "name=systemd": "/",
    }


def test_proc_cgroup_malformed() -> None:
    with pytest.raises(ValueError, match="malformed cgroup membership line 'garbage'"):
        parse_proc_cgroup("garbage\n")


@pytest.mark.parametrize(
    ("text", "cores"),
    [
        ("max 100000\n", None),
        ("max\n", None),
        ("150000 100000\n", 1.5),
        ("50000 100000", 0.5),
        ("400000 100000", 4.0),
        ("100000 300000", 0.333),
        ("200000 300000", 0.666),  # rounded down, never up
        ("200000", 2.0),  # period defaults to 100 ms
        ("1000 100000", 0.01),
    ],
)
def test_parse_cpu_max(text: str, cores: float | None) -> None:
    assert parse_cpu_max(text) == cores


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected '<quota|max> <period>'"),
        ("1 2 3", "expected '<quota|max> <period>'"),
        ("abc 100000", "quota 'abc' is not an integer"),
        ("100000 abc", "period 'abc' is not an integer"),
        ("0 100000", "must both be positive"),
        ("100000 0", "must both be positive"),
    ],
)
def test_parse_cpu_max_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cpu_max(text)


def test_parse_cfs() -> None:
    assert parse_cfs("-1\n", "100000\n") is None
    assert parse_cfs("150000\n", "100000\n") == 1.5
    assert parse_cfs("250000", "100000") == 2.5
    with pytest.raises(ValueError, match="cfs quota 'x' is not an integer"):
        parse_cfs("x", "100000")
    with pytest.raises(ValueError, match="must both be positive"):
        parse_cfs("-2", "100000")


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("max\n", None),
        ("2147483648\n", 2 * GIB),
        ("0", 0),
        (V1_UNLIMITED, None),
    ],
)
def test_parse_memory_max(text: str, limit: int | None) -> None:
    assert parse_memory_max(text) == limit


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        (V1_UNLIMITED, None),
        ("9223372036854710272", None),  # 64 KiB pages
        ("536870912\n", 512 * MIB),
    ],
)
def test_parse_memory_limit_in_bytes(text: str, limit: int | None) -> None:
    assert parse_memory_limit_in_bytes(text) == limit


@pytest.mark.parametrize(
    ("text", "message"),
    [("-5", "memory limit -5 is negative"), ("lots", "memory limit 'lots' is not an integer")],
)
def test_parse_memory_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_memory_limit_in_bytes(text)


# -- cgroup trees --------------------------------------------------------------------------


def test_chain_follows_own_cgroup_up_to_root(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert cgroup_chain(tmp_path, "/a/b") == [tmp_path / "a" / "b", tmp_path / "a", tmp_path]
    assert cgroup_chain(tmp_path, "/") == [tmp_path]
    assert cgroup_chain(tmp_path, None) == [tmp_path]


@pytest.mark.parametrize("own", ["/docker/abc", "/../../escape", "/a/../a/b"])
def test_chain_falls_back_to_root(tmp_path: Path, own: str) -> None:
    base = tmp_path / "cgroup"
    (base / "a" / "b").mkdir(parents=True)
    (tmp_path / "escape").mkdir()
    assert cgroup_chain(base, own) == [base]


def test_empty_root_has_no_limits(tmp_path: Path) -> None:
    assert cpu_limit(tmp_path) is None
    assert memory_limit(tmp_path) is None


def test_v2_limits_at_root(tmp_path: Path) -> None:
    source = put(tmp_path, "sys/fs/cgroup/cpu.max", "150000 100000\n")
    put(tmp_path, "sys/fs/cgroup/memory.max", f"{3 * GIB}\n")
    put(tmp_path, "proc/self/cgroup", "0::/\n")
    limit = cpu_limit(tmp_path)
    assert limit is not None
    assert (limit.value, limit.source) == (1.5, source)
    memory = memory_limit(tmp_path)
    assert memory is not None
    assert memory.value == 3 * GIB


def test_v2_unlimited(tmp_path: Path) -> None:
    put(tmp_path, "sys/fs/cgroup/cpu.max", "max 100000\n")
    put(tmp_path, "sys/fs/cgroup/memory.max", "max\n")
    assert cpu_limit(tmp_path) is None
    assert memory_limit(tmp_path) is None


def test_v2_own_sub_cgroup_and_tighter_parent(tmp_path: Path) -> None:
    put(tmp_path, "proc/self/cgroup", "0::/kubepods/pod1/ctr\n")
    put(tmp_path, "sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "250000 100000\n")
    put(tmp_path, "sys/fs/cgroup/kubepods/pod1/ctr/memory.max", "max\n")
    parent = put(tmp_path, "sys/fs/cgroup/kubepods/pod1/cpu.max", "200000 100000\n")
    put(tmp_path, "sys/fs/cgroup/kubepods/pod1/memory.max", f"{GIB}\n")
    put(tmp_path, "sys/fs/cgroup/kubepods/cpu.max", "max 100000\n")
    put(tmp_path, "sys/fs/cgroup/cpu.max", "800000 100000\n")  # a decoy that is looser
    limit = cpu_limit(tmp_path)
    assert limit is not None
    assert (limit.value, limit.source) == (2.0, parent)
    memory = memory_limit(tmp_path)
    assert memory is not None
    assert memory.value == GIB


def test_v2_own_path_missing_uses_root(tmp_path: Path) -> None:
    put(tmp_path, "proc/self/cgroup", "0::/system.slice/docker-abc.scope\n")
    put(tmp_path, "sys/fs/cgroup/cpu.max", "50000 100000\n")
    put(tmp_path, "sys/fs/cgroup/other/cpu.max", "10000 100000\n")
    limit = cpu_limit(tmp_path)
    assert limit is not None
    assert limit.value == 0.5


@pytest.mark.parametrize("cpu_dir", ["cpu,cpuacct", "cpu"])
def test_v1_cpu_quota_at_root(tmp_path: Path, cpu_dir: str) -> None:
    source = put(tmp_path, f"sys/fs/cgroup/{cpu_dir}/cpu.cfs_quota_us", "150000\n")
    put(tmp_path, f"sys/fs/cgroup/{cpu_dir}/cpu.cfs_period_us", "100000\n")
    limit = cpu_limit(tmp_path)
    assert limit is not None
    assert (limit.value, limit.source) == (1.5, source)


def test_v1_unlimited(tmp_path: Path) -> None:
    put(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    put(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    put(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", V1_UNLIMITED)
    assert cpu_limit(tmp_path) is None
    assert memory_limit(tmp_path) is None


def test_v1_own_sub_cgroup(tmp_path: Path) -> None:
    put(tmp_path, "proc/self/cgroup", "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    for directory in ("sys/fs/cgroup/cpu,cpuacct", "sys/fs/cgroup/cpu,cpuacct/docker/abc"):
        put(tmp_path, f"{directory}/cpu.cfs_period_us", "100000\n")
    put(tmp_path, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    put(tmp_path, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "300000\n")
    put(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", V1_UNLIMITED)
    put(tmp_path, "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes", f"{512 * MIB}\n")
    limit = cpu_limit(tmp_path)
    assert limit is not None
    assert limit.value == 3.0
    memory = memory_limit(tmp_path)
    assert memory is not None
    assert memory.value == 512 * MIB


def test_v1_quota_without_period_is_ignored(tmp_path: Path) -> None:
    put(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "100000\n")
    assert cpu_limit(tmp_path) is None


def test_malformed_cgroup_file_names_the_file(tmp_path: Path) -> None:
    put(tmp_path, "sys/fs/cgroup/memory.max", "lots\n")
    with pytest.raises(ValueError, match=r"memory\.max: memory limit 'lots' is not an integer"):
        memory_limit(tmp_path)


def test_detect_cpu_and_ram_notes(tmp_path: Path) -> None:
    put(tmp_path, "sys/fs/cgroup/cpu.max", "150000 100000\n")
    put(tmp_path, "sys/fs/cgroup/memory.max", f"{2 * GIB + 123}\n")
    notes: list[str] = []
    assert detect_cpu(tmp_path, 8, notes) == 1.5
    assert detect_cpu(tmp_path, 1, notes) == 1.0  # affinity tighter than the quota
    assert detect_ram_mb(tmp_path, 32 * GIB, notes) == 2048
    assert detect_ram_mb(tmp_path, GIB, notes) == 1024
    assert len(notes) == 2
    assert notes[0].startswith("cpu limited by cgroup quota to 1.5 of 8 usable (")
    assert notes[1].startswith("ram limited by cgroup to 2048 MB of 32768 MB (")


# -- GPUs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("NVIDIA A100-SXM4-40GB", "A100"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("Tesla V100-SXM2-16GB", "V100"),
        ("Tesla T4", "T4"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA RTX A6000", "A6000"),
        ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090"),
        ("  ", "gpu"),
    ],
)
def test_short_model(name: str, model: str) -> None:
    assert short_model(name) == model


def test_detected_gpu_device_uses_short_model() -> None:
    assert A100.model == "A100"
    assert A100.device() == GPUDevice(index=0, model="A100", memory_mb=40960)


def test_detect_gpus_reasons() -> None:
    assert detect_gpus(two_gpus) == ((A100, H100), None)
    assert detect_gpus(no_gpus) == (
        (),
        "no NVML: pynvml not installed (pip install 'taskiq-fleet[gpu]')",
    )

    def broken() -> list[DetectedGPU]:
        raise RuntimeError("NVML Shared Library Not Found")

    assert detect_gpus(broken) == ((), "no NVML: RuntimeError: NVML Shared Library Not Found")


class FakeNVML(types.ModuleType):
    """Just enough of pynvml's surface for query_nvml."""

    def __init__(self, names: list[Any], fail_at: int | None = None) -> None:
        super().__init__("pynvml")
        self.names, self.fail_at = names, fail_at
        self.calls: list[str] = []

    def nvmlInit(self) -> None:
        self.calls.append("init")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.names)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index == self.fail_at:
            raise RuntimeError("GPU is lost")
        return index

    def nvmlDeviceGetName(self, handle: int) -> Any:
        return self.names[handle]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return types.SimpleNamespace(total=(handle + 1) * 16 * GIB + 12345)


def test_query_nvml_reads_every_device(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNVML([b"Tesla T4", "NVIDIA L4"])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert query_nvml() == [DetectedGPU(0, "Tesla T4", 16384), DetectedGPU(1, "NVIDIA L4", 32768)]
    assert fake.calls == ["init", "shutdown"]


def test_query_nvml_shuts_down_after_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNVML(["NVIDIA L4", "NVIDIA L4"], fail_at=1)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert detect_gpus() == ((), "no NVML: RuntimeError: GPU is lost")
    assert fake.calls == ["init", "shutdown"]


@pytest.mark.parametrize(
    ("spec", "devices"),
    [
        ("", []),
        ("  ", []),
        ("0", []),
        ("2xL4:24576", [(0, "L4", 24576), (1, "L4", 24576)]),
        ("A100:40960,A100:40960", [(0, "A100", 40960), (1, "A100", 40960)]),
        ("1xH100", [(0, "H100", 0)]),
        ("H100", [(0, "H100", 0)]),
        (" 2 x L4 : 24576 , A100 ", [(0, "L4", 24576), (1, "L4", 24576), (2, "A100", 0)]),
        ("1xRTX 4090:24564", [(0, "RTX 4090", 24564)]),
        ("MI300X:196608", [(0, "MI300X", 196608)]),
    ],
)
def test_parse_gpu_spec(spec: str, devices: list[tuple[int, str, int]]) -> None:
    expected = tuple(GPUDevice(index=i, model=m, memory_mb=mem) for i, m, mem in devices)
    assert parse_gpu_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("3xL4:abc", "memory 'abc' of 'L4' must be a whole number of MB"),
        ("x", "count '' in 'x' must be a whole number of at least 1"),
        ("-1xL4", "count '-1' in '-1xL4' must be a whole number of at least 1"),
        ("0xL4", "count '0' in '0xL4' must be a whole number of at least 1"),
        ("2.5xL4", r"count '2\.5' in '2\.5xL4' must be a whole number"),
        ("2x", "model missing in '2x'"),
        (":1024", "model missing in ':1024'"),
        ("L4:", "memory '' of 'L4' must be a whole number of MB"),
        ("L4:-1", "memory '-1' of 'L4'"),
        ("L4,,L4", "empty item"),
        ("L4,", "empty item"),
    ],
)
def test_parse_gpu_spec_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        parse_gpu_spec(spec)
    assert str(error.value).startswith(f"invalid --gpus {spec!r}: ")


# -- headroom ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "headroom"),
    [
        (None, Headroom()),
        ("", Headroom()),
        ("cpu=0.5,ram_mb=1024", Headroom(Share(0.5), Share(1024))),
        ("10%", Headroom(Share(10, percent=True), Share(10, percent=True))),
        (" cpu = 12.5% , ram_mb=2048 ", Headroom(Share(12.5, percent=True), Share(2048))),
        ("ram_mb=5%", Headroom(Share(), Share(5, percent=True))),
        ("cpu=0", Headroom()),
    ],
)
def test_parse_headroom(text: str | None, headroom: Headroom) -> None:
    assert parse_headroom(text) == headroom


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpu=1", "unknown dimension 'gpu' \\(use cpu or ram_mb\\)"),
        ("0.5", "'0.5' is neither dimension=amount nor N%"),
        ("cpu=abc", "cpu amount 'abc' is not a number"),
        ("cpu=", "cpu amount '' is not a number"),
        ("%", "cpu amount '%' is not a number"),
        ("cpu=-1", "cpu amount '-1' must be a non-negative number"),
        ("ram_mb=nan", "ram_mb amount 'nan' must be a non-negative number"),
        ("cpu=inf", "cpu amount 'inf' must be a non-negative number"),
        ("100%", "cpu 100% would keep everything back; stay below 100%"),
        ("ram_mb=1.5", "ram_mb amount '1.5' must be a whole number of MB"),
        ("cpu=0.0005", "cpu headroom=0.0005 is finer than 0.001"),
        ("cpu=1,cpu=2", "cpu given twice"),
        ("10%,ram_mb=5", "ram_mb given twice"),
        ("cpu=1,,ram_mb=2", "'' is neither dimension=amount nor N%"),
    ],
)
def test_parse_headroom_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        parse_headroom(text)
    assert str(error.value).startswith(f"invalid --headroom {text!r}: ")


@pytest.mark.parametrize(
    ("share", "total", "scale", "held"),
    [
        (Share(0.5), 2000, 1000, 500),
        (Share(1024), 32768, 1, 1024),
        (Share(10, percent=True), 1500, 1000, 150),
        (Share(10, percent=True), 1001, 1, 101),  # 100.1 MB rounds up
        (Share(33.3, percent=True), 1000, 1, 333),  # exact: no float fuzz pushing to 334
    ],
)
def test_share_of(share: Share, total: int, scale: int, held: int) -> None:
    assert share.of(total, scale) == held


# -- labels --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        (None, {}),
        ("", {}),
        ("zone=eu", {"zone": "eu"}),
        (
            " zone = eu , tier=spot,example.com/team=ml ",
            {"zone": "eu", "tier": "spot", "example.com/team": "ml"},
        ),
        ("expr=a=b", {"expr": "a=b"}),
    ],
)
def test_parse_labels(text: str | None, labels: dict[str, str]) -> None:
    assert parse_labels(text) == labels


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("zone", "item 'zone' is not key=value"),
        ("=eu", "item '=eu' is not key=value"),
        ("zone=eu,,tier=spot", "item '' is not key=value"),
        ("zone=", "item 'zone=' has no value \\(for a flag write zone=true\\)"),
        ("-zone=eu", "invalid label key '-zone'"),
        ("my zone=eu", "invalid label key 'my zone'"),
        ("zone=eu,zone=us", "'zone' given twice"),
    ],
)
def test_parse_labels_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        parse_labels(text)
    assert str(error.value).startswith(f"invalid --labels {text!r}: ")


def test_auto_labels() -> None:
    devices = [A100.device(), H100.device(), GPUDevice(index=2, model="A100")]
    assert auto_labels(HOST, devices) == {
        "hostname": "box1",
        "os": "linux",
        "arch": "x86_64",
        "gpu_models": "A100,H100",
    }
    bare = HostFacts(cpus=1, ram_bytes=GIB, hostname="h", system="Darwin", machine="")
    assert auto_labels(bare, []) == {"hostname": "h", "os": "darwin"}


# -- detect() ------------------------------------------------------------------------------


@pytest.fixture
def limited_root(tmp_path: Path) -> Path:
    """A cgroup v2 container limited to 1.5 cores and 4 GiB."""
    put(tmp_path, "proc/self/cgroup", "0::/\n")
    put(tmp_path, "sys/fs/cgroup/cpu.max", "150000 100000\n")
    put(tmp_path, "sys/fs/cgroup/memory.max", f"{4 * GIB}\n")
    return tmp_path


def test_detect_from_cgroups_and_nvml(limited_root: Path) -> None:
    inventory = detect(limited_root, host=HOST, gpu_query=two_gpus)
    assert inventory.detected.cpu == 1.5
    assert inventory.detected.ram_mb == 4096
    assert inventory.detected.gpus == (A100, H100)
    assert inventory.overridden == frozenset()
    spec = inventory.spec
    assert (spec.name, spec.cpu, spec.ram_mb) == ("box1", 1.5, 4096)
    assert spec.gpus == (
        GPUDevice(index=0, model="A100", memory_mb=40960),
        GPUDevice(index=1, model="H100", memory_mb=81559),
    )
    assert spec.labels == {
        "hostname": "box1",
        "os": "linux",
        "arch": "x86_64",
        "gpu_models": "A100,H100",
    }
    notes = "\n".join(inventory.notes)
    assert "cpu limited by cgroup quota to 1.5 of 8 usable" in notes
    assert "ram limited by cgroup to 4096 MB of 32768 MB" in notes
    assert "NVML found 2 GPU(s): 0: NVIDIA A100-SXM4-40GB (40960 MB); 1: NVIDIA H100" in notes


def test_detect_without_limits_or_nvml(tmp_path: Path) -> None:
    inventory = detect(tmp_path, host=HOST, gpu_query=no_gpus, name="w7")
    assert (inventory.spec.name, inventory.spec.cpu, inventory.spec.ram_mb) == ("w7", 8, 32768)
    assert inventory.spec.gpus == ()
    assert "gpu_models" not in inventory.spec.labels
    assert inventory.notes == ("no NVML: pynvml not installed (pip install 'taskiq-fleet[gpu]')",)


def test_detect_headroom(limited_root: Path) -> None:
    inventory = detect(limited_root, host=HOST, gpu_query=no_gpus, headroom="cpu=0.5,ram_mb=1000")
    assert (inventory.spec.cpu, inventory.spec.ram_mb) == (1.0, 3096)
    assert inventory.headroom == Headroom(Share(0.5), Share(1000))
    assert "cpu headroom 0.5 keeps back 0.5 of 1.5" in inventory.notes
    percent = detect(limited_root, host=HOST, gpu_query=no_gpus, headroom="10%")
    assert (percent.spec.cpu, percent.spec.ram_mb) == (1.35, 3686)  # 409.6 MB held -> 410


def test_overrides_win_and_skip_headroom(limited_root: Path) -> None:
    inventory = detect(
        limited_root,
        host=HOST,
        gpu_query=two_gpus,
        cpus=4,
        ram_mb=2048,
        gpus="2xL4:24576",
        headroom="10%",
        labels={"zone": "eu", "hostname": "alias"},
    )
    assert inventory.detected.cpu == 1.5
    assert inventory.detected.gpus == (A100, H100)
    assert inventory.overridden == frozenset({"cpu", "ram_mb", "gpus"})
    spec = inventory.spec
    assert (spec.name, spec.cpu, spec.ram_mb) == ("box1", 4, 2048)
    assert [(g.index, g.model, g.memory_mb) for g in spec.gpus] == [
        (0, "L4", 24576),
        (1, "L4", 24576),
    ]
    assert spec.labels == {
        "hostname": "alias",
        "os": "linux",
        "arch": "x86_64",
        "gpu_models": "L4",
        "zone": "eu",
    }
    assert "cpu set by --cpus to 4 (detected 1.5); headroom 10% not applied" in inventory.notes
    assert "gpus set by --gpus to 2 device(s) (detected 2)" in inventory.notes


def test_gpu_override_zero_hides_devices(tmp_path: Path) -> None:
    inventory = detect(tmp_path, host=HOST, gpu_query=two_gpus, gpus="0")
    assert inventory.spec.gpus == ()
    assert "gpu_models" not in inventory.spec.labels


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"headroom": "cpu=1.5"},
            "--headroom cpu=1.5 leaves nothing of the 1.5 detected; .* --cpus",
        ),
        ({"headroom": "ram_mb=5000"}, "--headroom ram_mb=5000 leaves nothing of the 4096 detected"),
        ({"headroom": "cpu=x"}, "invalid --headroom 'cpu=x'"),
        ({"gpus": "x"}, "invalid --gpus 'x'"),
        ({"cpus": -1.0}, "--cpus -1.0 must be a non-negative number"),
        ({"cpus": float("nan")}, "--cpus nan must be a non-negative number"),
        ({"cpus": 1.0005}, "--cpus=1.0005 is finer than 0.001"),
        ({"ram_mb": -5}, "--ram-mb -5 must be a non-negative number"),
    ],
)
def test_detect_errors(limited_root: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        detect(limited_root, host=HOST, gpu_query=no_gpus, **options)


def test_detect_refuses_bad_user_label_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="invalid label key"):
        detect(tmp_path, host=HOST, gpu_query=no_gpus, labels={"bad key": "x"})


# -- this machine --------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _own_dirs(base: Path, controller: str) -> list[Path]:
    """This process's cgroup dir and its ancestors, read independently of the module."""
    own = "/"
    for line in (_read(Path("/proc/self/cgroup")) or "").splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in (controllers.split(",") if controller else [controllers]):
            own = path
    target = base / own.lstrip("/")
    if own == "/" or ".." in own or not target.is_dir():
        return [base]
    return [target, *[p for p in target.parents if p.is_relative_to(base)]]


def _machine_quotas() -> list[float]:
    mount = Path("/sys/fs/cgroup")
    quotas = []
    for directory in _own_dirs(mount, ""):
        fields = (_read(directory / "cpu.max") or "max").split()
        if fields[0] != "max":
            quotas.append(int(fields[0]) * 1000 // int(fields[1]) / 1000)
    v1 = next((mount / d for d in ("cpu", "cpu,cpuacct") if (mount / d).is_dir()), None)
    for directory in _own_dirs(v1, "cpu") if v1 else []:
        quota, period = (
            _read(directory / "cpu.cfs_quota_us"),
            _read(directory / "cpu.cfs_period_us"),
        )
        if quota and period and int(quota) > 0:
            quotas.append(int(quota) * 1000 // int(period) / 1000)
    return quotas


def _machine_memory_limits() -> list[int]:
    mount = Path("/sys/fs/cgroup")
    texts = [_read(d / "memory.max") for d in _own_dirs(mount, "")]
    texts += [_read(d / "memory.limit_in_bytes") for d in _own_dirs(mount / "memory", "memory")]
    return [int(t) for t in texts if t and t != "max" and int(t) < 2**62]


def test_detect_on_this_machine() -> None:
    inventory = detect(Path("/"))
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert usable_cpus() == affinity
    assert inventory.detected.cpu == min([float(affinity or 1), *_machine_quotas()])
    total = psutil.virtual_memory().total
    assert inventory.detected.ram_mb == min([total, *_machine_memory_limits()]) // MIB
    assert inventory.spec.cpu == inventory.detected.cpu
    assert inventory.spec.ram_mb == inventory.detected.ram_mb
    assert inventory.spec.name == socket.gethostname()
    labels = inventory.spec.labels
    assert labels["hostname"] == socket.gethostname()
    assert labels["os"] == platform.system().lower()
    assert labels.get("arch") == (platform.machine() or None)
    if importlib.util.find_spec("pynvml") is None:
        assert inventory.spec.gpus == ()
        assert "no NVML: pynvml not installed (pip install 'taskiq-fleet[gpu]')" in inventory.notes
