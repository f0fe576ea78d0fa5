"""The throughput workloads alone, then again while 10,000 simulated agents heartbeat.

nats-server, a coordinator and ``--agents`` agents run as processes, as for
``benchmarks.throughput`` (agents of 64 cpus, every task asking for 1). Its workloads
(5,000 no-op tasks at once, round trips, a chain, a fan-out) run ``--repeats`` times
alone; then ``benchmarks.sim_agents`` starts ``--workers`` simulated workers (a process of
its own) that register and heartbeat every ``--interval`` seconds, the coordinator is
left until it answers the probes' heartbeats within a second, then given ``--settle``
seconds with them and nothing else (its CPU share then is what the heartbeats cost), and
the workloads run again. The simulated workers serve another task
(``sim_noop``), so placement routes around them: the figures compare the same work.

Printed: each figure alone and with the crowd (medians) and their ratio, the
coordinator's CPU share in each phase, and the heartbeat lag (a probe's heartbeat to the
coordinator's answer, ``sim_agents``) while idle and under the workloads.

    python -m benchmarks.crowd --workers 10000 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]

from benchmarks._common import environment, fleet_processes, stop_on_sigterm, write_json
from benchmarks._workload import Peer, Sizes, add_size_arguments, measure, pct, positive
from benchmarks._workload import sizes_from as sizes_of
from benchmarks._workload import warm_up as warm
from benchmarks.throughput import APP, FleetPeer, _connect
from tests.processes import ROOT


class CpuShare:
    """A process's CPU seconds per wall second between ``start`` and ``stop``."""

    def __init__(self, pid: int) -> None:
        self._proc = psutil.Process(pid)
        self._cpu = self._wall = 0.0

    def _now(self) -> tuple[float, float]:
        t = self._proc.cpu_times()
        return float(t.user + t.system), time.perf_counter()

    def start(self) -> None:
        self._cpu, self._wall = self._now()

    def stop(self) -> float:
        cpu, wall = self._now()
        return (cpu - self._cpu) / max(wall - self._wall, 1e-9)


@contextmanager
def crowd(url: str, args: argparse.Namespace, stats: Path) -> Iterator[Callable[[], Any]]:
    """The simulated agents (a process); yields a reader of their latest figures."""
    cmd = [sys.executable, "-m", "benchmarks.sim_agents", "--nats", url]
    cmd += ["--workers", str(args.workers), "--interval", str(args.interval)]
    cmd += ["--stats", str(stats)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)

    def read() -> Any:
        return json.loads(stats.read_text()) if stats.exists() else {}

    try:
        yield read
    finally:
        proc.terminate()
        proc.wait(60)


def until(read: Callable[[], Any], pred: Callable[[Any], bool], within: float) -> None:
    """Until the simulated agents' figures satisfy ``pred`` (they are written every 2 s)."""
    deadline = time.monotonic() + within
    while not pred(read()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"simulated agents not ready after {within} s: {read()}")
        time.sleep(0.5)


def caught_up(figures: Any) -> bool:
    """The coordinator has taken in the crowd: its last 8 probe answers came within a
    second (registering 10,000 workers at once keeps it busy for a while)."""
    recent = figures.get("heartbeat_lags_ms", [])[-8:]
    return len(recent) == 8 and max(recent) < 1000


def lags(figures: Any, since: int) -> dict[str, float]:
    found = [float(x) for x in figures.get("heartbeat_lags_ms", [])[since:]]
    if not found:
        return {"n": 0}
    return {"n": len(found), "p50": statistics.median(found), "p99": pct(found, 0.99)}


def rounds(peer: Peer, sizes: Sizes, repeats: int) -> list[dict[str, float]]:
    rows = []
    for _ in range(repeats):
        rows.append(measure(peer, sizes))
        print("  " + "  ".join(f"{k}={v:.2f}" for k, v in rows[-1].items()), flush=True)
    return rows


def medians(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rows) for key in rows[0]}


def run(args: argparse.Namespace, sizes: Sizes, out: dict[str, Any]) -> None:
    stats = Path(tempfile.mkdtemp(prefix="fleet-crowd-")) / "sim.json"
    with fleet_processes(args.agents, APP) as (url, pid, _), asyncio.Runner() as runner:
        peer = FleetPeer(runner, runner.run(_connect(url, args.agents)))
        share = CpuShare(pid)
        warm(peer, sizes)
        share.start()
        alone = rounds(peer, sizes, args.repeats)
        out["alone"], out["cpu_alone"] = medians(alone), share.stop()
        with crowd(url, args, stats) as read:
            started = time.perf_counter()
            until(read, caught_up, 900)
            out["caught_up_s"] = time.perf_counter() - started
            share.start()
            before = len(read().get("heartbeat_lags_ms", []))
            time.sleep(args.settle)
            out["cpu_idle_crowd"] = share.stop()
            until(read, lambda f: len(f.get("heartbeat_lags_ms", [])) > before, 60)
            out["lag_idle"] = lags(read(), before)
            before = len(read().get("heartbeat_lags_ms", []))
            share.start()
            try:
                busy = rounds(peer, sizes, args.repeats)
            except Exception as exc:  # the coordinator did not keep up: say so, with figures
                out["crowd_error"] = f"{type(exc).__name__}: {exc}"[:300]
                busy = [{key: float("nan") for key in out["alone"]}]
            out["cpu_crowd"] = share.stop()
            time.sleep(3)  # the last figures are written every 2 s
            out["lag_busy"] = lags(read(), before)
            out["crowd"] = medians(busy)
            out["sim"] = {k: v for k, v in read().items() if k != "heartbeat_lags_ms"}
        runner.run(peer_shutdown())


async def peer_shutdown() -> None:
    from benchmarks import bench_tasks

    await bench_tasks.broker.shutdown()


def report(out: dict[str, Any], workers: int) -> str:
    lines = [f"{'figure':18} {'alone':>10} {f'{workers:,} sim':>10} {'ratio':>7}"]
    for key, alone in out["alone"].items():
        crowd_value = out["crowd"][key]
        lines.append(f"{key:18} {alone:10.2f} {crowd_value:10.2f} {crowd_value / alone:7.2f}")
    if "crowd_error" in out:
        lines.append(f"with the crowd the workloads did not finish: {out['crowd_error']}")
    lines.append(
        f"coordinator CPU share: {out['cpu_alone']:.0%} alone, {out['cpu_idle_crowd']:.0%} "
        f"with the crowd idle, {out['cpu_crowd']:.0%} with the crowd and the workloads"
    )
    for phase in ("idle", "busy"):
        lag = out[f"lag_{phase}"]
        if lag["n"]:
            lines.append(
                f"heartbeat lag ({phase}): p50 {lag['p50']:.1f} ms, p99 {lag['p99']:.1f} ms "
                f"({lag['n']} probes)"
            )
    lines.append(
        f"the crowd taken in (probes answered within 1 s) after {out['caught_up_s']:.0f} s"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_size_arguments(parser, Sizes(round_trips=300, payload=0))
    parser.add_argument("--agents", type=positive, default=2)
    parser.add_argument("--workers", type=positive, default=10_000)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--repeats", type=positive, default=1)
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"workers": args.workers, "interval": args.interval}
    stop_on_sigterm()
    run(args, sizes_of(args), out)
    print(report(out, args.workers))
    if args.json is not None:
        write_json(args.json, {"environment": environment(), **out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
