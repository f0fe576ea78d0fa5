"""Short runs of the fault suite's scenarios 1, 2 and 4, and its security scenario
(``python -m chaos`` runs them long): real nats-server, coordinator and agent processes on
loopback, a few faults each, every end condition of the suite held (no run failed or lost,
no node completed twice under one attempt, no reservation left, no crash; under the flood,
no worker lost; every forgery refused).
"""

from __future__ import annotations

import pytest

from chaos.flood import flood
from chaos.report import Figures, table
from chaos.scenarios import Body, Plan, agent_kills, coordinator_kills, run_scenario
from chaos.security import security

pytestmark = pytest.mark.integration

SHORT = Plan(rounds=3, seed=7, budget=20.0, flood=3_000)


def check(figures: Figures) -> None:
    assert figures.submitted > 0, table([figures])
    assert figures.rounds == SHORT.rounds, table([figures])
    assert figures.failures() == [], table([figures])


@pytest.mark.parametrize(
    ("name", "body"),
    [("agent-kill", agent_kills), ("coordinator-kill", coordinator_kills), ("flood", flood)],
)
async def test_a_short_chaos_scenario_holds_its_end_condition(name: str, body: Body) -> None:
    check(await run_scenario(name, SHORT, body))


async def test_the_security_scenario_holds_with_the_deployed_accounts() -> None:
    """Every role's forgeries refused by ``deploy/nats/accounts.conf`` (it failed to start
    once the file named a user the scenario gave no password: the dashboard's)."""
    figures = await security(SHORT)
    assert figures.submitted > 0, table([figures])
    assert figures.failures() == [], table([figures])
