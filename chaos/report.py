"""The figures of one scenario, its end condition, and the table they are printed in."""

from __future__ import annotations

from dataclasses import dataclass, field

COLUMNS = (
    ("scenario", "scenario"),
    ("rounds", "rounds"),
    ("submitted", "runs"),
    ("succeeded", "ok"),
    ("failed", "failed"),
    ("lost", "lost"),
    ("twice", "twice"),
    ("reserved_left", "reserved"),
    ("crashes", "crashes"),
    ("forbidden", "forbidden"),
    ("wall", "wall s"),
    ("verdict", "verdict"),
)


@dataclass
class Figures:
    scenario: str
    rounds: int = 0
    submitted: int = 0
    succeeded: int = 0
    failed: int = 0
    lost: int = 0
    twice: int = 0
    """Nodes that completed twice under one attempt."""
    reserved_left: int = 0
    """Workers whose reservations were not back to 0 once every run had ended."""
    crashes: int = 0
    tried: int = 0
    refused: int = 0
    wall: float = 0.0
    measures: dict[str, str] = field(default_factory=dict)
    """Scenario-specific figures (stall, log size), printed below the table."""
    problems: list[str] = field(default_factory=list)
    """Why the end condition failed, beyond the counts (first failures, unrefused acts)."""

    @property
    def forbidden(self) -> str:
        return f"{self.refused}/{self.tried}" if self.tried else "-"

    def failures(self) -> list[str]:
        """The end condition: empty when the scenario passed."""
        checks = {
            "runs failed": self.failed,
            "runs lost": self.lost,
            "nodes completed twice under one attempt": self.twice,
            "workers with reservations left": self.reserved_left,
            "process crashes": self.crashes,
            "forbidden actions not refused": self.tried - self.refused,
        }
        found = [f"{n} {what}" for what, n in checks.items() if n]
        return found + self.problems

    @property
    def verdict(self) -> str:
        return "FAIL" if self.failures() else "ok"

    def cell(self, name: str) -> str:
        value = getattr(self, name)
        return f"{value:.1f}" if isinstance(value, float) else str(value)


def table(rows: list[Figures]) -> str:
    heads = [head for _, head in COLUMNS]
    cells = [[row.cell(name) for name, _ in COLUMNS] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    for row in rows:
        for key, value in row.measures.items():
            lines.append(f"{row.scenario}: {key}: {value}")
        for failure in row.failures():
            lines.append(f"{row.scenario}: FAILED: {failure}")
    return "\n".join(lines)
