"""How long a fleet goes without a leader: standby takeover after kill -9 or SIGSTOP.

Starts nats-server, two coordinators and two agents as processes. Each round: a probe
task is submitted every ``--every`` seconds; the leader (named by the lease record) is
killed with -9 (or stopped with SIGSTOP); the round's figure is the time from the fault
to the end of the first probe submitted after it, i.e. until the new leader has placed
new work and its result is back. Then the old leader is started again (or resumed) and
stands by for the next round. Prints each round and the median and maximum.

    python -m benchmarks.takeover --rounds 10 [--fault stop] [--lease-ttl 1.5]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import tempfile
import time
from pathlib import Path

from coordinator.leadership import LeaderRecord
from coordinator.lease import LEASE_KEY
from shared.wire.subjects import Subjects
from taskiq_fleet import CoordinatorClient, Dag, Node, RunHandle
from tests.natsserver import NatsServer
from tests.processes import FleetProcess, agent

PROBE = Dag(nodes=(Node(id="p", task="noop", args=(0,)),))
APP = "benchmarks.bench_tasks:broker"


class Bench:
    def __init__(self, url: str, base: Path, lease_ttl: float) -> None:
        self.url, self.base, self.lease_ttl = url, base, lease_ttl
        self.coordinators: dict[int, FleetProcess] = {}
        self.started = 0

    def start_coordinator(self) -> FleetProcess:
        self.started += 1
        args = ["coordinator", "--nats", self.url, "--lease-ttl", str(self.lease_ttl)]
        args += ["--log-level", "warning"]
        proc = FleetProcess(args, self.base / f"coordinator-{self.started}.log").start()
        self.coordinators[proc.pid] = proc
        return proc

    async def leader(self, client: CoordinatorClient, not_pid: int = 0) -> FleetProcess:
        kv = await client.nc.jetstream().key_value(Subjects().leader_bucket)
        while True:
            entry = await kv.get(LEASE_KEY)
            record = LeaderRecord.model_validate_json(entry.value or b"{}")
            pid = int(record.name.rsplit(":", 1)[-1]) if record.holder else 0
            if pid in self.coordinators and pid != not_pid:
                return self.coordinators[pid]
            await asyncio.sleep(0.05)


async def one_round(bench: Bench, client: CoordinatorClient, fault: str, every: float) -> float:
    leader = await bench.leader(client)
    probes: list[tuple[float, RunHandle]] = []
    done, after = asyncio.Event(), asyncio.Event()
    faulted = float("inf")

    async def submit() -> None:
        while not done.is_set():
            at = time.time()
            probes.append((at, await client.submit(PROBE)))
            if at > faulted:
                after.set()
            await asyncio.sleep(every)

    submitting = asyncio.create_task(submit())
    await asyncio.sleep(0.5)
    faulted = time.time()
    if fault == "kill":
        leader.kill()
    else:
        leader.signal(signal.SIGSTOP)
    await bench.leader(client, not_pid=leader.pid)
    await after.wait()
    first = next(h for at, h in probes if at > faulted)
    view = await first.wait(timeout=60)
    done.set()
    await submitting
    views = await asyncio.gather(*(h.wait(timeout=60) for _, h in probes))
    failed = [v.run_id for v in views if v.status != "succeeded"]
    if failed:
        raise SystemExit(f"runs failed across the takeover: {failed}")
    assert view.finished_at is not None
    if fault == "kill":
        del bench.coordinators[leader.pid]
        bench.start_coordinator()
    else:
        leader.signal(signal.SIGCONT)
    await asyncio.sleep(3 * bench.lease_ttl)  # the old leader stands by again
    return view.finished_at - faulted


async def main_async(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="fleet-takeover-"))
    with NatsServer(base / "nats") as server:
        bench = Bench(server.url, base, args.lease_ttl)
        agents = [
            agent(server.url, f"a{i}", base, "--cpus", "4", "--log-level", "warning", app=APP)
            for i in (1, 2)
        ]
        for proc in agents:
            proc.start()
        bench.start_coordinator()
        bench.start_coordinator()
        try:
            async with await CoordinatorClient.connect(server.url) as client:
                await client.wait_ready(2, within=60)
                times = []
                for i in range(1, args.rounds + 1):
                    took = await one_round(bench, client, args.fault, args.every)
                    times.append(took)
                    print(f"round {i:2}: {args.fault} -> new work done in {took:.2f} s", flush=True)
                print(
                    f"{args.fault}: {len(times)} takeovers, lease ttl {args.lease_ttl:g} s: "
                    f"p50 {statistics.median(times):.2f} s, max {max(times):.2f} s"
                )
        finally:
            for proc in [*agents, *bench.coordinators.values()]:
                proc.signal(signal.SIGCONT)
                proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--fault", choices=("kill", "stop"), default="kill")
    parser.add_argument("--lease-ttl", type=float, default=1.5)
    parser.add_argument("--every", type=float, default=0.05, help="seconds between probes")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
