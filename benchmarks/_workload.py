"""The workloads every peer benchmark runs and the figures they yield, written once.

A peer (the fleet, Ray, Dask) only knows how to run four primitive workloads on its own
system; the sizes, the order of the steps, the warm-up and the arithmetic that turns
timings into figures live here, so two peers' figures are computed the same way and a
side-by-side ratio compares like with like.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

SMALL = 1
"""The argument of a small task: its result is the same value."""


class Peer(Protocol):
    """One system under measurement; every call blocks until its work is done."""

    name: str

    def throughput(self, n: int) -> float:
        """Tasks per second for ``n`` no-op tasks submitted at once and all awaited."""
        ...

    def round_trips(self, n: int, value: Any) -> list[float]:
        """Seconds of each of ``n`` no-op tasks run one after another, each taking and
        returning ``value``."""
        ...

    def chain(self, length: int) -> float:
        """Seconds for ``length`` no-op tasks, each taking the previous one's result."""
        ...

    def fan(self, width: int, value: Any) -> float:
        """Seconds for a source taking ``value``, ``width`` tasks each taking the source's
        result and returning it, and a sink that starts after all of them and receives
        none of their results."""
        ...


@dataclass(frozen=True)
class Sizes:
    tasks: int = 5000
    round_trips: int = 500
    chain: int = 200
    fan: int = 1000
    payload: int = 1_000_000
    """Bytes of the large argument and result; 0 leaves the payload figures out."""
    payload_round_trips: int = 500
    payload_fan: int = 1000


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool = False


def size_text(n: int) -> str:
    """``1_000_000`` -> ``1 MB``: payload sizes as the issue names them."""
    for unit, scale in (("MB", 1_000_000), ("kB", 1000)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n:,} B"


def figures(sizes: Sizes) -> list[Figure]:
    """Every figure a round yields at these sizes, in the order they are printed."""
    found = [
        Figure("tasks_per_s", f"{sizes.tasks:,} no-op tasks at once", "tasks/s", True),
        Figure("rt_p50_ms", f"round trip p50 ({sizes.round_trips:,} sequential)", "ms"),
        Figure("rt_p99_ms", f"round trip p99 ({sizes.round_trips:,} sequential)", "ms"),
        Figure("chain_ms_per_hop", f"{sizes.chain:,}-node chain, per hop", "ms"),
        Figure("fanout_s", f"fan-out 1 -> {sizes.fan:,} -> 1", "s"),
    ]
    if sizes.payload:
        big = f"{size_text(sizes.payload)} argument and result"
        found += [
            Figure("payload_rt_p50_ms", f"round trip p50, {big}", "ms"),
            Figure("payload_rt_p99_ms", f"round trip p99, {big}", "ms"),
            Figure("payload_fanout_s", f"fan-out 1 -> {sizes.payload_fan:,} -> 1, {big}", "s"),
        ]
    return found


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(times: Sequence[float], prefix: str = "rt") -> dict[str, float]:
    return {
        f"{prefix}_p50_ms": statistics.median(times) * 1000,
        f"{prefix}_p99_ms": pct(times, 0.99) * 1000,
    }


def payload(sizes: Sizes) -> str:
    """A JSON-friendly large value (the fleet's wire is JSON), the same for every peer."""
    return "x" * sizes.payload


Step = Callable[[Peer, Sizes], dict[str, float]]


def _throughput(peer: Peer, sizes: Sizes) -> dict[str, float]:
    return {"tasks_per_s": peer.throughput(sizes.tasks)}


def _round_trips(peer: Peer, sizes: Sizes) -> dict[str, float]:
    return latency(peer.round_trips(sizes.round_trips, SMALL))


def _chain(peer: Peer, sizes: Sizes) -> dict[str, float]:
    return {"chain_ms_per_hop": peer.chain(sizes.chain) / sizes.chain * 1000}


def _fan(peer: Peer, sizes: Sizes) -> dict[str, float]:
    return {"fanout_s": peer.fan(sizes.fan, SMALL)}


def _payload_round_trips(peer: Peer, sizes: Sizes) -> dict[str, float]:
    return latency(peer.round_trips(sizes.payload_round_trips, payload(sizes)), "payload_rt")


def _payload_fan(peer: Peer, sizes: Sizes) -> dict[str, float]:
    return {"payload_fanout_s": peer.fan(sizes.payload_fan, payload(sizes))}


def steps(sizes: Sizes) -> list[tuple[str, Step]]:
    """The workloads of one round, each a step two peers can take in turn."""
    found: list[tuple[str, Step]] = [
        ("throughput", _throughput),
        ("round trips", _round_trips),
        ("chain", _chain),
        ("fan-out", _fan),
    ]
    if sizes.payload:
        found += [("payload round trips", _payload_round_trips), ("payload fan-out", _payload_fan)]
    return found


def warm_up(peer: Peer, sizes: Sizes) -> None:
    """Once before the first round: starts every worker, ships every function and, with
    a payload, the first large value, so round 1 measures the same thing as round 2."""
    peer.throughput(200)
    peer.fan(10, SMALL)
    if sizes.payload:
        peer.round_trips(2, payload(sizes))


def measure(peer: Peer, sizes: Sizes) -> dict[str, float]:
    """Every figure of one round on one peer."""
    row: dict[str, float] = {}
    for _, step in steps(sizes):
        row.update(step(peer, sizes))
    return row


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def positive(text: str) -> int:
    value = non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def add_size_arguments(parser: argparse.ArgumentParser, defaults: Sizes) -> None:
    """The sizes as options; every peer script offers the same ones."""
    parser.add_argument("--tasks", type=positive, default=defaults.tasks)
    parser.add_argument("--round-trips", type=positive, default=defaults.round_trips)
    parser.add_argument("--chain", type=positive, default=defaults.chain)
    parser.add_argument("--fan", type=positive, default=defaults.fan)
    parser.add_argument(
        "--payload",
        type=non_negative,
        default=defaults.payload,
        help=f"bytes of the large argument and result, 0 to skip (default {defaults.payload})",
    )
    parser.add_argument(
        "--payload-round-trips", type=positive, default=defaults.payload_round_trips
    )
    parser.add_argument("--payload-fan", type=positive, default=defaults.payload_fan)


def sizes_from(args: argparse.Namespace) -> Sizes:
    return Sizes(
        tasks=args.tasks,
        round_trips=args.round_trips,
        chain=args.chain,
        fan=args.fan,
        payload=args.payload,
        payload_round_trips=args.payload_round_trips,
        payload_fan=args.payload_fan,
    )


def rounds(peer: Peer, sizes: Sizes, repeats: int, out: IO[str]) -> list[dict[str, float]]:
    """A peer script's run: the warm-up, then ``repeats`` rounds, each printed as it ends."""
    warm_up(peer, sizes)
    rows = []
    for _ in range(repeats):
        rows.append(measure(peer, sizes))
        print("  " + "  ".join(f"{k}={v:.2f}" for k, v in rows[-1].items()), file=out, flush=True)
    return rows


def report(rows: Sequence[dict[str, float]], heading: str, as_json: bool = False) -> None:
    """The median of every figure over the rounds: a table, or one JSON object."""
    medians = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    if as_json:
        print(json.dumps(medians))
        return
    print(f"\n{heading}")
    for key, value in medians.items():
        print(f"  {key:18} {value:10.2f}")
