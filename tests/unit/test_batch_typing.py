"""``.kiq`` of a ``batch=True`` task is typed to take one item (the maintainer's review of
taskiq PR #634): mypy --strict accepts the right calls and rejects a list or a missing
parameter."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

SNIPPET = textwrap.dedent(
    """
    from taskiq_fleet.broker import FleetBroker

    broker = FleetBroker()

    @broker.task(batch=True, batch_size=60, batch_timeout=3, task_name="tfunc")
    async def tfunc(test: list[int]) -> bool:
        return True

    @broker.task(batch=True, batch_size=5)
    def scale(items: list[int], factor: int, offset: int = 0) -> list[int]:
        return [i * factor + offset for i in items]

    @broker.task
    async def plain(x: int) -> str:
        return str(x)

    async def main() -> None:
        await tfunc.kiq(1)
        await scale.kiq(1, 10)
        await scale.kiq(1, factor=10, offset=2)
        reveal_type(await plain.kiq(1))
        await tfunc.kiq([1, 2])  # E: a list where one item goes
        await scale.kiq(1)  # E: factor missing
        await plain.kiq("a")  # E: not batched, typed as taskiq types it
    """
)


def test_kiq_takes_one_item(tmp_path: Path) -> None:
    source = tmp_path / "snippet.py"
    source.write_text(SNIPPET)
    out, err, _ = api.run(
        ["--strict", "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", str(source)]
    )
    assert err == ""
    errors = sorted(int(line.split(":")[1]) for line in out.splitlines() if ": error:" in line)
    expected = [n for n, line in enumerate(SNIPPET.splitlines(), 1) if "# E:" in line]
    assert len(expected) == 3
    assert errors == expected, out
    assert 'Revealed type is "taskiq.task.AsyncTaskiqTask[str]"' in out, out
