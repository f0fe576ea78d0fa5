"""The host as the OS reports it, and the CPU and memory limits cgroups put on it.

A process in a container sees the host's cores in ``os.cpu_count()`` and the
host's RAM in ``/proc/meminfo``; what the kernel will actually let it use is
the cgroup's CPU quota and memory limit. Advertising the host's figures would
make the pool overcommit every containerised worker, so the agent reads them.

The ``parse_*`` functions take file contents and are pure; the readers take a
root directory (``/`` in production, a fake tree in tests). Limits are
hierarchical: a parent cgroup's quota binds every child, so the readers take
the tightest limit on the path from the process's own cgroup up to the root of
the mounted hierarchy. ``detect_cpu`` and ``detect_ram_mb`` combine them with
what the OS reports (CPU affinity, physical RAM) into the capacity to advertise.
"""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Generic, TypeVar

import psutil  # type: ignore[import-untyped, unused-ignore]

T = TypeVar("T", int, float)

CGROUP_MOUNT = PurePosixPath("sys/fs/cgroup")
PROC_SELF_CGROUP = PurePosixPath("proc/self/cgroup")
# cgroup v1 reports "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 with
# 4 KiB pages, a little less with larger pages); no machine has 2**62 bytes.
UNLIMITED_BYTES = 1 << 62
_V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")
MIB = 1024 * 1024


@dataclass(frozen=True)
class Membership:
    """Where this process sits in each hierarchy, as ``/proc/self/cgroup`` says."""

    unified: str | None = None
    v1: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Limit(Generic[T]):
    """A limit together with the file that imposes it, so notes can point at it."""

    value: T
    source: Path


def parse_proc_cgroup(text: str) -> Membership:
    unified: str | None = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(":", 2)
        if len(parts) != 3:
            raise ValueError(f"malformed cgroup membership line {line!r}")
        _, controllers, path = parts
        if not controllers:
            unified = path
        for controller in filter(None, controllers.split(",")):
            v1[controller] = path
    return Membership(unified, v1)


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an integer") from None


def _cores(quota: int, period: int) -> float:
    """Cores rounded down to 0.001, the pool's precision; down so we never over-advertise."""
    if quota <= 0 or period <= 0:
        raise ValueError(f"quota {quota} / period {period} must both be positive")
    return (quota * 1000 // period) / 1000


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 ``cpu.max``: ``"max 100000"`` is unlimited, ``"150000 100000"`` 1.5 cores."""
    fields = text.split()
    if not 1 <= len(fields) <= 2:
        raise ValueError(f"expected '<quota|max> <period>', got {text.strip()!r}")
    if fields[0] == "max":
        return None
    period = _int(fields[1], "period") if len(fields) == 2 else 100_000
    return _cores(_int(fields[0], "quota"), period)


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; a quota of -1 is unlimited."""
    quota = _int(quota_text.strip(), "cfs quota")
    if quota == -1:
        return None
    return _cores(quota, _int(period_text.strip(), "cfs period"))


def parse_memory_max(text: str) -> int | None:
    """cgroup v2 ``memory.max`` in bytes; ``"max"`` is unlimited."""
    value = text.strip()
    return None if value == "max" else parse_memory_limit_in_bytes(value)


def parse_memory_limit_in_bytes(text: str) -> int | None:
    """cgroup v1 ``memory.limit_in_bytes``; values near 2**63 mean unlimited."""
    value = _int(text.strip(), "memory limit")
    if value < 0:
        raise ValueError(f"memory limit {value} is negative")
    return None if value >= UNLIMITED_BYTES else value


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # absent, not permitted, or a directory: no limit readable here
        return None


def read_membership(root: Path) -> Membership:
    text = _read(root / PROC_SELF_CGROUP)
    return parse_proc_cgroup(text) if text is not None else Membership()


def cgroup_chain(base: Path, own: str | None) -> list[Path]:
    """The process's cgroup directory and its ancestors up to ``base``, innermost first.

    Falls back to ``base`` alone when the own path does not exist under it: inside a
    container without a cgroup namespace ``/proc/self/cgroup`` names the host's path
    (``/docker/<id>``) while the container's own cgroup is mounted as the root.
    A path with ``..`` (a process outside the namespace's root) is never followed.
    """
    parts = [p for p in PurePosixPath(own or "/").parts if p != "/"]
    if ".." in parts or not base.joinpath(*parts).is_dir():
        return [base]
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _tightest(limits: Iterable[Limit[T] | None]) -> Limit[T] | None:
    found = [limit for limit in limits if limit is not None]
    return min(found, key=lambda limit: limit.value, default=None)


def _file_limit(path: Path, parse: Callable[[str], T | None]) -> Limit[T] | None:
    text = _read(path)
    if text is None:
        return None
    try:
        value = parse(text)
    except ValueError as exc:
        raise ValueError(f"cannot read cgroup limit from {path}: {exc}") from None
    return None if value is None else Limit(value, path)


def _cfs_limit(directory: Path) -> Limit[float] | None:
    quota_path = directory / "cpu.cfs_quota_us"
    quota, period = _read(quota_path), _read(directory / "cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    return _file_limit(quota_path, lambda text: parse_cfs(text, period))


def cpu_limit(root: Path = Path("/")) -> Limit[float] | None:
    """The tightest CPU quota binding this process, in cores; None when unlimited."""
    mount = root / CGROUP_MOUNT
    member = read_membership(root)
    limits = [
        _file_limit(d / "cpu.max", parse_cpu_max) for d in cgroup_chain(mount, member.unified)
    ]
    v1_dirs = [mount / name for name in _V1_CPU_DIRS if (mount / name).is_dir()]
    if v1_dirs:
        limits += [_cfs_limit(d) for d in cgroup_chain(v1_dirs[0], member.v1.get("cpu"))]
    return _tightest(limits)


def memory_limit(root: Path = Path("/")) -> Limit[int] | None:
    """The tightest memory limit binding this process, in bytes; None when unlimited."""
    mount = root / CGROUP_MOUNT
    member = read_membership(root)
    v2 = cgroup_chain(mount, member.unified)
    v1 = cgroup_chain(mount / "memory", member.v1.get("memory"))
    return _tightest(
        [_file_limit(d / "memory.max", parse_memory_max) for d in v2]
        + [_file_limit(d / "memory.limit_in_bytes", parse_memory_limit_in_bytes) for d in v1]
    )


# -- capacity: what the OS offers, cut down by cgroup limits ------------------------------


@dataclass(frozen=True)
class HostFacts:
    """What the OS says about the machine before cgroup limits; injectable for tests."""

    cpus: int
    ram_bytes: int
    hostname: str
    system: str
    machine: str

    @classmethod
    def current(cls) -> HostFacts:
        memory = int(psutil.virtual_memory().total)
        system, machine = platform.system(), platform.machine()
        return cls(usable_cpus(), memory, socket.gethostname(), system, machine)


def usable_cpus() -> int:
    """CPUs this process may run on (taskset, cpuset), which can be fewer than the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity API on this platform
        return os.cpu_count() or 1


def detect_cpu(root: Path, host_cpus: int, notes: list[str]) -> float:
    """Usable cores: the quota when it is tighter than affinity; the note says which bound."""
    limit = cpu_limit(root)
    if limit is None or limit.value >= host_cpus:
        return float(host_cpus)
    notes.append(
        f"cpu limited by cgroup quota to {limit.value:g} of {host_cpus} usable ({limit.source})"
    )
    return limit.value


def detect_ram_mb(root: Path, host_bytes: int, notes: list[str]) -> int:
    """Usable MB: the cgroup limit when it is below physical RAM (the OOM killer uses it)."""
    limit = memory_limit(root)
    if limit is None or limit.value >= host_bytes:
        return host_bytes // MIB
    notes.append(
        f"ram limited by cgroup to {limit.value // MIB} MB of {host_bytes // MIB} MB "
        f"({limit.source})"
    )
    return limit.value // MIB
