"""Scenario 5 (placeholder until written)."""

from __future__ import annotations

from chaos.report import Figures
from chaos.scenarios import Plan


async def security(plan: Plan) -> Figures:
    return Figures("security", problems=["not written yet"])
