"""The agent as a separate process against a real nats-server, driven by the stand-in."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psutil
import pytest

from shared.payloads import PayloadStore
from shared.wire.protocol import PayloadRef
from tests.natsserver import NatsServer
from tests.processes import ROOT, TASKS_APP, FleetProcess, agent, until_exists
from tests.standin import StandIn, assignment, attempt

MIB = 1024 * 1024


@pytest.fixture
async def standin(nats_url: str) -> AsyncIterator[StandIn]:
    async with StandIn(nats_url) as s:
        yield s


@pytest.fixture
def start_agent(nats_url: str, tmp_path: Path) -> Iterator[Callable[..., FleetProcess]]:
    started: list[FleetProcess] = []

    def start(name: str, *extra: str) -> FleetProcess:
        proc = agent(nats_url, name, tmp_path, *extra).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


async def ready(standin: StandIn, name: str) -> None:
    await standin.registered(name)


# -- advertising -----------------------------------------------------------------------------


def _cgroup_v2_limits() -> tuple[float | None, int | None]:
    """What the cgroup v2 files along this process's own cgroup say, read independently."""
    try:
        own = Path("/proc/self/cgroup").read_text().strip().splitlines()
    except OSError:
        return None, None
    path = next((line.split("::", 1)[1] for line in own if line.startswith("0::")), None)
    if path is None:
        return None, None
    cpu: float | None = None
    ram: int | None = None
    directory = Path("/sys/fs/cgroup") / path.lstrip("/")
    for d in [directory, *directory.parents]:
        if not str(d).startswith("/sys/fs/cgroup"):
            break
        with_quota = d / "cpu.max"
        if with_quota.exists():
            quota, period = with_quota.read_text().split()
            if quota != "max":
                cpu = min(cpu or 1e9, int(quota) / int(period))
        with_limit = d / "memory.max"
        if with_limit.exists() and with_limit.read_text().strip() != "max":
            ram = min(ram or 1 << 62, int(with_limit.read_text()))
    return cpu, ram


async def test_advertised_capacity_matches_the_host(
    standin: StandIn, start_agent: Callable[..., FleetProcess]
) -> None:
    start_agent("plain")
    reg = await standin.registered("plain")
    quota, limit = _cgroup_v2_limits()
    cpus = float(len(os.sched_getaffinity(0)))
    if quota is not None:
        cpus = min(cpus, quota)
    ram = psutil.virtual_memory().total
    if limit is not None:
        ram = min(ram, limit)
    assert reg.spec.cpu == pytest.approx(cpus, abs=0.001)
    assert reg.spec.ram_mb == ram // MIB
    assert reg.spec.gpus == ()
    assert reg.spec.labels["os"] == "linux"
    assert "add" in " ".join(reg.tasks)
    beat = await standin.heartbeat("plain")
    assert 0 < beat.available_ram_mb <= psutil.virtual_memory().total // MIB
    assert beat.capacity == reg.spec


async def test_overrides_win(standin: StandIn, start_agent: Callable[..., FleetProcess]) -> None:
    start_agent(
        "big", "--cpus", "3", "--ram-mb", "1234", "--gpus", "2xL4:24576", "--labels", "zone=a"
    )
    spec = (await standin.registered("big")).spec
    assert (spec.cpu, spec.ram_mb) == (3.0, 1234)
    assert [(g.index, g.model, g.memory_mb) for g in spec.gpus] == [
        (0, "L4", 24576),
        (1, "L4", 24576),
    ]
    assert spec.labels["zone"] == "a"
    assert spec.labels["gpu_models"] == "L4"


# -- execution ---------------------------------------------------------------------------------


async def test_sync_async_and_failing_tasks_report(
    standin: StandIn, start_agent: Callable[..., FleetProcess]
) -> None:
    start_agent("w", "--gpus", "2xL4:24576")
    await ready(standin, "w")
    add = assignment("add", 2, 3)
    desc = assignment("describe", "hi", ref=attempt(number=3), gpus=1, gpu_devices=(1,))
    fail = assignment("fail", "boom")
    for a in (add, desc, fail):
        assert (await standin.assign("w", a)).type == "accept"
    assert (await standin.outcome(add.ref)).return_value == 5
    got = await standin.outcome(desc.ref)
    assert got.status == "succeeded"
    assert got.return_value == {
        "text": "hi",
        "attempt": 3,
        "gpus": [1],
        "pid": got.return_value["pid"],
    }  # type: ignore[index, call-overload]
    failed = await standin.outcome(fail.ref)
    assert failed.status == "failed"
    assert failed.error is not None
    assert (failed.error.type, failed.error.message) == ("ValueError", "boom")
    assert "raise ValueError(message)" in failed.error.traceback


async def test_large_results_travel_by_reference(
    standin: StandIn, start_agent: Callable[..., FleetProcess]
) -> None:
    start_agent("w")
    await ready(standin, "w")
    a = assignment("big", 2 * MIB)
    await standin.assign("w", a)
    outcome = await standin.outcome(a.ref)
    assert outcome.return_value is None
    assert outcome.return_ref is not None
    store = PayloadStore(standin.client, standin.subjects)
    assert await store.load(outcome.return_ref) == "x" * (2 * MIB)


async def test_an_argument_whose_stored_value_is_gone_fails_the_attempt_with_the_reason(
    standin: StandIn, start_agent: Callable[..., FleetProcess]
) -> None:
    proc = start_agent("w")
    await ready(standin, "w")
    a = assignment("add", 0, 1).model_copy(
        update={"arg_refs": {"0": PayloadRef(name="client.never-stored", size=1, sha256="0" * 64)}}
    )
    await standin.assign("w", a)
    outcome = await standin.outcome(a.ref)
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error.type == "PayloadError"
    assert "stored value 'client.never-stored' is gone" in outcome.error.message
    assert "Traceback" not in proc.log()


async def test_assignments_and_cancels_of_an_older_leader_term_are_dropped(
    standin: StandIn, start_agent: Callable[..., FleetProcess], tmp_path: Path
) -> None:
    """A deposed leader's late word: the agent has heard term 5, so term 4 is dropped."""
    proc = start_agent("w")
    await ready(standin, "w")
    gate = tmp_path / "gate"
    standin.term = 5
    holder = assignment("async_wait_for_gate", str(gate))
    assert (await standin.assign("w", holder)).type == "accept"

    standin.term = 4
    await standin.cancel("w", holder.ref)
    late = assignment("add", 1, 2)
    await standin.send("w", late)

    standin.term = 5  # the agent reads its messages in order: these come after the two
    probe = assignment("add", 2, 3)
    assert (await standin.assign("w", probe)).type == "accept"
    assert (await standin.outcome(probe.ref)).return_value == 5
    await standin.heartbeat("w", lambda h: holder.ref in h.running)  # not cancelled
    gate.touch()
    assert (await standin.outcome(holder.ref)).status == "succeeded"
    assert await standin.outcome_count(late.ref) == 0
    assert "stale_term" in proc.log()


async def test_over_capacity_and_unknown_tasks_are_rejected(
    standin: StandIn, start_agent: Callable[..., FleetProcess], tmp_path: Path
) -> None:
    start_agent("small", "--cpus", "2", "--ram-mb", "2048")
    await ready(standin, "small")
    too_big = await standin.assign("small", assignment("add", 1, 1, cpu=3))
    assert too_big.type == "reject"
    assert too_big.code == "capacity"
    assert "cpu 3 > free 2" in too_big.reason
    gate = tmp_path / "gate"
    holder = assignment("async_wait_for_gate", str(gate), cpu=1.5, ram_mb=2000)
    assert (await standin.assign("small", holder)).type == "accept"
    beat = await standin.heartbeat("small", lambda h: holder.ref in h.running)
    assert (beat.reserved.cpu, beat.reserved.ram_mb) == (1.5, 2000)
    second = await standin.assign("small", assignment("add", 1, 1, cpu=1, ram_mb=100))
    assert second.type == "reject"
    assert "cpu 1 > free 0.5" in second.reason
    assert "ram_mb 100 > free 48" in second.reason
    unknown = await standin.assign("small", assignment("no_such_task", cpu=0.1))
    assert unknown.type == "reject"
    assert unknown.code == "unknown_task"
    assert "no_such_task" in unknown.reason
    gate.touch()
    assert (await standin.outcome(holder.ref)).return_value == "opened"
    after = await standin.heartbeat("small", lambda h: not h.running and h.seq > beat.seq)
    assert after.reserved.cpu == 0


async def test_timeout_is_reported(
    standin: StandIn, start_agent: Callable[..., FleetProcess]
) -> None:
    start_agent("w")
    await ready(standin, "w")
    a = assignment("sleep_for", 30, timeout=0.3)
    await standin.assign("w", a)
    outcome = await standin.outcome(a.ref)
    assert outcome.status == "timed_out"
    assert outcome.duration < 10


async def test_cancel_stops_a_running_attempt(
    standin: StandIn, start_agent: Callable[..., FleetProcess], tmp_path: Path
) -> None:
    start_agent("w")
    await ready(standin, "w")
    a = assignment("async_wait_for_gate", str(tmp_path / "never"))
    await standin.assign("w", a)
    await standin.heartbeat("w", lambda h: a.ref in h.running)
    await standin.cancel("w", a.ref, "user asked")
    outcome = await standin.outcome(a.ref)
    assert outcome.status == "cancelled"
    assert outcome.error is not None
    assert "user asked" in outcome.error.message


# -- drain -------------------------------------------------------------------------------------


async def test_sigterm_drains_and_exits_zero(
    standin: StandIn, start_agent: Callable[..., FleetProcess], tmp_path: Path
) -> None:
    proc = start_agent("w")
    await ready(standin, "w")
    gate, done = tmp_path / "gate", tmp_path / "done"
    a = assignment("wait_for_gate", str(gate), str(done), 7)
    await standin.assign("w", a)
    await standin.heartbeat("w", lambda h: a.ref in h.running)
    proc.signal(signal.SIGTERM)
    await standin.heartbeat("w", lambda h: h.draining)
    late = await standin.assign("w", assignment("add", 1, 2))
    assert late.type == "reject"
    assert late.code == "draining"
    assert proc.proc is not None
    assert proc.proc.poll() is None, "exited before its attempt finished"
    gate.touch()
    assert await asyncio.to_thread(proc.wait, 20) == 0
    assert (await standin.outcome(a.ref)).return_value == 7
    assert (await standin.deregistered("w")).reason
    assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == "zombie"


async def test_drain_timeout_cancels_what_is_left(
    standin: StandIn, start_agent: Callable[..., FleetProcess], tmp_path: Path
) -> None:
    proc = start_agent("w", "--drain-timeout", "0.5")
    await ready(standin, "w")
    stuck = assignment("wait_for_gate", str(tmp_path / "never"), str(tmp_path / "x"), 1)
    await standin.assign("w", stuck)
    await standin.heartbeat("w", lambda h: stuck.ref in h.running)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.signal(signal.SIGINT)
    assert await asyncio.to_thread(proc.wait, 20) == 0
    outcome = await standin.outcome(stuck.ref)
    assert outcome.status == "cancelled"
    assert not [c for c in children if c.is_running()]


# -- outages and bad input -----------------------------------------------------------------------


async def test_outcome_survives_a_nats_restart(
    nats_server: NatsServer,
    standin: StandIn,
    start_agent: Callable[..., FleetProcess],
    tmp_path: Path,
) -> None:
    proc = start_agent("w")
    await ready(standin, "w")
    gate, done = tmp_path / "gate", tmp_path / "done"
    a = assignment("wait_for_gate", str(gate), str(done), 42)
    await standin.assign("w", a)
    before = await standin.heartbeat("w", lambda h: a.ref in h.running)
    await asyncio.to_thread(nats_server.stop)
    gate.touch()
    await until_exists(done)  # the task finishes while NATS is down
    await asyncio.to_thread(nats_server.start)
    outcome = await standin.outcome(a.ref, within=30)
    assert outcome.return_value == 42
    await standin.heartbeat("w", lambda h: h.seq > before.seq + 1 and not h.running)
    assert "reconnected to NATS; registering again" in proc.log()
    assert await standin.outcome_count(a.ref) == 1


async def test_a_huge_error_is_clipped_so_its_outcome_can_be_stored(
    standin: StandIn, start_agent: Callable[..., FleetProcess]
) -> None:
    """The message comes back in the traceback too: unclipped, the outcome would exceed the
    server's max_payload, never be stored, and the attempt would hang its run."""
    start_agent("w")
    await ready(standin, "w")
    huge = assignment("fail", "x" * 700_000)
    assert (await standin.assign("w", huge)).type == "accept"
    outcome = await standin.outcome(huge.ref)
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error.type == "ValueError"
    assert outcome.error.message.startswith("xxx")
    assert "clipped" in outcome.error.message
    assert len(outcome.error.message) + len(outcome.error.traceback) < 100_000
    assert "raise ValueError(message)" in outcome.error.traceback
    small = assignment("add", 1, 2)
    await standin.assign("w", small)
    assert (await standin.outcome(small.ref)).return_value == 3


GARBAGE: list[bytes] = [
    b"",
    b"not json",
    b"[]",
    b"{}",
    b'{"type": "assign"}',
    b'{"type": "assign", "version": 99}',
    b'{"type": "nonsense"}',
    b'{"type": "heartbeat", "worker": "w"}',
    b"\xff\xfe\x00",
    b'{"type": "assign", "ref": {"run_id": "a b", "node_id": "n", "attempt": 0}}',
    b'{"type": "cancel", "ref": null}',
    b'{"type": "batch", "items": []}',
]


async def test_malformed_messages_are_dropped_and_the_agent_keeps_serving(
    standin: StandIn, start_agent: Callable[..., FleetProcess]
) -> None:
    proc = start_agent("w")
    await ready(standin, "w")
    nc = standin.client
    subjects = [standin.subjects.assign("w"), standin.subjects.cancel("w"), "fleet.worker.w.bogus"]
    for i in range(1000):
        await nc.publish(subjects[i % 3], GARBAGE[i % len(GARBAGE)] + (b" " * (i % 2)))
    await nc.flush()
    a = assignment("add", 20, 22)
    assert (await standin.assign("w", a)).type == "accept"
    assert (await standin.outcome(a.ref)).return_value == 42
    await standin.heartbeat("w", lambda h: h.seq > 2)
    # Logged in counted, sampled lines (at most one a second per kind): the counts add up.
    async with asyncio.timeout(20):
        while dropped_in(proc.log()) < 1000:  # noqa: ASYNC110  (another process's log)
            await asyncio.sleep(0.05)
    assert dropped_in(proc.log()) == 1000
    assert proc.log().count("dropped a malformed message") < 100


def dropped_in(log: str) -> int:
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return sum(e["dropped"] for e in lines if e.get("event") == "dropped a malformed message")


# -- command line ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["nosuchmodule:broker"], "cannot import module 'nosuchmodule'"),
        (["tests.e2e.agent_tasks:nothing"], "has no attribute 'nothing'"),
        (["tests.e2e.agent_tasks"], "module:broker"),
        ([TASKS_APP, "--cpus", "-1"], "must be > 0"),
        ([TASKS_APP, "--gpus", "bogus:x"], "--gpus"),
        ([TASKS_APP, "--name", "bad name"], "cannot be used in a NATS subject"),
        ([TASKS_APP, "--labels", "novalue"], "--labels"),
        ([TASKS_APP, "--nats", "http://x"], "nats://"),
        ([TASKS_APP, "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_app_or_flags_exit_2_with_a_clear_message(args: list[str], text: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "taskiq_fleet.cli", "agent", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert text in result.stderr


def test_unreachable_nats_is_a_clear_failure(tmp_path: Path) -> None:
    from tests.natsserver import free_port

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskiq_fleet.cli",
            "agent",
            TASKS_APP,
            "--nats",
            f"nats://127.0.0.1:{free_port()}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot" in result.stderr.lower()
