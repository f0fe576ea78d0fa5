"""The peer benchmark's arithmetic and its closing table; no timing is measured here."""

from __future__ import annotations

import argparse
import os

import pytest

from benchmarks import peers
from benchmarks._workload import Sizes, add_size_arguments, figures, size_text, sizes_from


def test_time_ratio_is_fleet_over_ray_and_a_rate_is_inverted() -> None:
    assert peers.time_ratios([2.0, 3.0], [1.0, 6.0], rate=False) == [2.0, 0.5]
    assert peers.time_ratios([2000.0, 500.0], [1000.0, 1000.0], rate=True) == [0.5, 2.0]
    assert peers.rate_ratios([2000.0, 500.0], [1000.0, 1000.0]) == [2.0, 0.5]


def test_rounds_of_both_sides_must_pair_up() -> None:
    with pytest.raises(ValueError, match="shorter"):
        peers.time_ratios([1.0, 2.0], [1.0], rate=False)


def rows(values: list[float], key: str) -> list[dict[str, float]]:
    return [{key: v} for v in values]


def test_table_gives_each_round_the_ratio_per_round_and_the_median() -> None:
    latency = [f for f in figures(Sizes(payload=0)) if f.key == "rt_p50_ms"]
    text = peers.comparison(
        latency, rows([2.0, 4.0, 9.0], "rt_p50_ms"), rows([1.0] * 3, "rt_p50_ms")
    )
    header, rule, line = text.splitlines()
    assert header.split()[:2] == ["figure", "unit"]
    assert set(rule) <= {"-", " "}
    assert line.startswith("round trip p50 (500 sequential)")
    assert "2.00 / 4.00 / 9.00" in line
    assert "1.00 / 1.00 / 1.00" in line
    assert line.endswith("2.00 / 4.00 / 9.00    4.00")


def test_throughput_gets_a_time_ratio_and_a_rate_ratio_line() -> None:
    rate = [f for f in figures(Sizes()) if f.key == "tasks_per_s"]
    text = peers.comparison(
        rate, rows([1000.0, 4000.0, 3000.0], "tasks_per_s"), rows([2000.0] * 3, "tasks_per_s")
    )
    first, second = text.splitlines()[2:]
    assert first.startswith("5,000 no-op tasks at once")
    assert "1000 / 4000 / 3000" in first
    assert first.endswith("2.00 / 0.50 / 0.67    0.67")
    assert second.strip().startswith("same, fleet tasks/s / Ray tasks/s")
    assert second.endswith("0.50 / 2.00 / 1.50    1.50")


def test_payload_figures_follow_the_payload_size_and_leave_with_zero() -> None:
    keys = [f.key for f in figures(Sizes())]
    assert keys[-3:] == ["payload_rt_p50_ms", "payload_rt_p99_ms", "payload_fanout_s"]
    assert "1 MB argument and result" in figures(Sizes())[-1].label
    assert [f.key for f in figures(Sizes(payload=0))] == keys[:-3]
    assert [size_text(n) for n in (1_000_000, 64_000, 1500)] == ["1 MB", "64 kB", "1,500 B"]


def parse(*argv: str) -> Sizes:
    parser = argparse.ArgumentParser()
    add_size_arguments(parser, Sizes())
    return sizes_from(parser.parse_args(argv))


def test_sizes_default_to_the_issue_and_shrink_by_flags() -> None:
    assert parse() == Sizes(5000, 500, 200, 1000, 1_000_000, 500, 1000)
    assert parse("--tasks", "50", "--payload", "0").tasks == 50


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tasks", "0"], "expected 1 or more, got 0"),
        (["--fan", "many"], "expected a whole number, got 'many'"),
        (["--payload", "-1"], "expected 0 or more, got -1"),
    ],
)
def test_a_bad_size_is_refused_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)
    assert message in capsys.readouterr().err.splitlines()[-1]


def test_peak_rss_reads_this_process() -> None:
    found = peers.peak_rss_mib({os.getpid(), -1})
    assert found is not None
    assert found[0] == 1
    assert found[1] > 1
