"""Small helpers shared by the benchmark scripts: argument parsing, tables, JSON."""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from coordinator.placement.policies import POLICIES


def int_list(text: str) -> list[int]:
    """``"100,1000"`` or ``"42-51"`` or a mix (``"1,5-7"``) to a list of ints."""
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            if sep:
                values.extend(range(int(lo), int(hi) + 1))
            else:
                values.append(int(part))
        except ValueError:
            msg = f"expected integers like 1,2 or 3-5, got {text!r}"
            raise argparse.ArgumentTypeError(msg) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def policy_list(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(names) - set(POLICIES))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown policies {unknown}; choose from {sorted(POLICIES)}"
        )
    return names


def add_policies_argument(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument(
        "--policies",
        type=policy_list,
        default=list(POLICIES),
        help=f"policies to {verb} (default: {','.join(POLICIES)})",
    )


def _numeric(cell: str) -> bool:
    return cell[:1].isdigit() or (cell[:1] in "-+" and cell[1:2].isdigit())


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A fixed-width table: numeric columns (blanks aside) right-aligned, text left-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right = [all(_numeric(r[i]) for r in cells[1:] if r[i]) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if r else cell.ljust(width)
            for cell, width, r in zip(row, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.rstrip()


def environment() -> dict[str, Any]:
    """Interpreter, machine and the code measured (commit plus uncommitted placement files)."""
    dirty = _git("status", "--porcelain", "--", "coordinator", "shared")
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_uncommitted": [line[3:] for line in dirty.splitlines()],
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    print(f"\nwrote {path}")


def stop_on_sigterm() -> None:
    """SIGTERM unwinds as Ctrl-C does, so the processes a benchmark started are stopped."""
    signal.signal(signal.SIGTERM, _interrupted)


def _interrupted(*_: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def _removed_after(path: Path) -> Iterator[None]:
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def bench_fleet(agents: int, app: str, cpus: int = 64) -> Iterator[str]:
    """``fleet_processes``, yielding the NATS URL only."""
    with fleet_processes(agents, app, cpus) as (url, _, _):
        yield url


@contextmanager
def fleet_processes(
    agents: int,
    app: str,
    cpus: int = 64,
    coordinator_args: Sequence[str] = (),
    stop_within: float = 15.0,
) -> Iterator[tuple[str, int, Path]]:
    """nats-server, a coordinator and ``agents`` agents of ``cpus`` cores serving ``app``,
    each a process on this host, quiet; yields the NATS URL, the coordinator's pid and the
    directory of the logs, then
    stops them all and removes the JetStream store (large payloads leave gigabytes there;
    logs stay, and where is printed)."""
    from tests.natsserver import NatsServer
    from tests.processes import agent, coordinator

    base = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    with _removed_after(base / "nats" / "store"), NatsServer(base / "nats") as server:
        coord = coordinator(server.url, base, "--log-level", "warning", *coordinator_args)
        procs = [coord]
        procs += [
            agent(
                server.url,
                f"bench{i}",
                base,
                *("--cpus", str(cpus), "--log-level", "warning"),
                app=app,
                heartbeat=2.0,
            )
            for i in range(agents)
        ]
        for proc in procs:
            proc.start()
        try:
            yield server.url, coord.pid, base
        finally:
            for proc in procs:
                proc.stop(stop_within)
        print(f"logs in {base}", file=sys.stderr)


def log_events(path: Path, events: Sequence[str]) -> dict[str, int]:
    """How often each of ``events`` was logged in the JSON log at ``path``."""
    counts = dict.fromkeys(events, 0)
    with contextlib.suppress(OSError), path.open() as lines:
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line).get("event")
                if event in counts:
                    counts[event] += 1
    return counts
