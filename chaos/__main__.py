"""``python -m chaos [--scenario NAME,...] [--rounds N] [--seed S]``: the fault suite.

Scenarios (each with its own nats-server, coordinator and agents on loopback):

- ``agent-kill``: kill -9 a random agent and start it again, repeatedly, while runs flow;
- ``coordinator-kill``: kill -9 the coordinator and start it again, every other kill
  within a second of a submission;
- ``nats``: stop or kill -9 nats-server and start it on the same port and JetStream dir;
- ``flood``: malformed and deeply nested messages on every subject the coordinator and
  the agents listen on, while runs flow; prints the coordinator's worst stall and the
  log it wrote;
- ``security``: each role (agent, client) tries to forge, impersonate, read, purge and
  redirect, on a server with deploy/nats/accounts.conf; each act must be refused.

Every scenario prints its figures in one table; the exit status is 1 if any scenario's end
condition failed (a run failed or lost, a node completed twice under one attempt, a
reservation left, a process crashed, a forbidden act not refused).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from chaos.flood import flood
from chaos.report import Figures, table
from chaos.scenarios import (
    Body,
    Plan,
    agent_kills,
    coordinator_kills,
    nats_restarts,
    run_scenario,
)
from chaos.security import security

SCENARIOS: dict[str, Body] = {
    "agent-kill": agent_kills,
    "coordinator-kill": coordinator_kills,
    "nats": nats_restarts,
    "flood": flood,
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n")[0])
    names = [*SCENARIOS, "security"]
    parser.add_argument(
        "--scenario",
        default=",".join(names),
        help=f"comma-separated, from {', '.join(names)} (default: all)",
    )
    parser.add_argument("--rounds", type=int, default=6, help="faults per scenario")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    parser.add_argument("--flood", type=int, default=20_000, help="messages of the flood")
    parser.add_argument(
        "--budget", type=float, default=240.0, help="seconds of faults per scenario at most"
    )
    args = parser.parse_args(argv)
    args.names = [n.strip() for n in args.scenario.split(",") if n.strip()]
    unknown = sorted(set(args.names) - set(names))
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    return args


async def suite(args: argparse.Namespace) -> list[Figures]:
    plan = Plan(rounds=args.rounds, seed=args.seed, budget=args.budget, flood=args.flood)
    rows = []
    for name in args.names:
        print(f"-- {name}", flush=True)
        if name == "security":
            rows.append(await security(plan))
        else:
            rows.append(await run_scenario(name, plan, SCENARIOS[name]))
        print(table(rows[-1:]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    rows = asyncio.run(suite(args))
    print(f"\n== python -m chaos --rounds {args.rounds} --seed {args.seed}")
    print(table(rows))
    return 1 if any(row.failures() for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
