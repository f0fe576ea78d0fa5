"""``fleet workers``, ``runs``, ``status`` and ``cancel``: the client commands
(``submit`` is in ``submit_cli.py``).

Each talks to the coordinator through ``CoordinatorClient``. Exit codes: 0 done
(run found, cancelled, run succeeded), 1 a failure at run time (NATS
unreachable, no coordinator answering, no such run, refused cancel, run failed),
2 a bad command line (flags, MODULE:ATTR, an input, a DAG the client refuses);
in that case nothing is sent. ``--json`` prints one JSON document on stdout
(``status --watch --json``: one per line, as the run changes). Tables fit the
terminal (``fit.output_width``). Heavy imports happen only when a command runs.

``status --watch`` asks the coordinator for the run every ``--interval`` seconds:
a node's changes are pushed only to the client that submitted it, and only the
run's end to everyone (``fleet.run.<run>``), which ends the watch at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from shared.cliargs import number, subject_prefix
from shared.connection import add_nats_arguments, prefix_from_env

if TYPE_CHECKING:
    from shared.wire.runs import RunView
    from taskiq_fleet.client import CoordinatorClient, RunHandle

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
Handler = Callable[[argparse.Namespace], int]
Action = Callable[["CoordinatorClient", argparse.Namespace], Awaitable[int]]


class UsageError(ValueError):
    """A command-line value that cannot work; reported in one line, exit 2."""


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--prefix",
        type=subject_prefix,
        default=prefix_from_env(),
        help="subject prefix shared by the fleet (default: fleet; env FLEET_PREFIX)",
    )
    add_nats_arguments(parser)


def error(args: argparse.Namespace, message: str) -> None:
    print(f"fleet {args.command}: error: {message}", file=sys.stderr)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def handler(action: Action) -> Handler:
    """Connect, run ``action``, and turn connection failures into one line and exit 1."""

    def handle(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(_connected(action, args))
        except UsageError as exc:
            error(args, str(exc))
            return EXIT_USAGE
        except KeyboardInterrupt:
            goes_on = "; the run goes on ('fleet cancel RUN' stops it)" * (args.command == "submit")
            error(args, f"interrupted{goes_on}")
            return EXIT_INTERRUPTED

    return handle


async def _connected(action: Action, args: argparse.Namespace) -> int:
    from shared.connection import ConnectionSettingsError, NatsConnectError, settings_from_args
    from taskiq_fleet.client import CoordinatorClient
    from taskiq_fleet.handles import FleetError

    try:
        nats = settings_from_args(args)
    except ConnectionSettingsError as exc:
        raise UsageError(str(exc)) from None
    try:
        client = await CoordinatorClient.connect(nats, prefix=args.prefix)
    except NatsConnectError as exc:
        error(args, str(exc))
        return EXIT_FAILURE
    try:
        return await action(client, args)
    except FleetError as exc:
        if exc.__cause__ is None:  # the coordinator answered with a refusal
            error(args, str(exc))
        else:
            where = ", ".join(nats.servers)
            error(
                args,
                f"no coordinator answered on prefix {args.prefix!r} at {where} "
                f"(is 'fleet coordinator' running?): {exc.__cause__!r}",
            )
        return EXIT_FAILURE
    finally:
        await client.close()


# -- workers, runs, status, cancel -----------------------------------------------------------


def configure_workers(parser: argparse.ArgumentParser) -> Handler:
    parser.description = (
        "List the live workers: labels, CPU/RAM reserved of total and free, GPUs with the "
        "free share of each, attempts running, health and last heartbeat."
    )
    common_arguments(parser)
    return handler(_workers)


async def _workers(client: CoordinatorClient, args: argparse.Namespace) -> int:
    from taskiq_fleet.fit import output_width
    from taskiq_fleet.tables import workers_text

    workers = await client.workers()
    if args.json:
        print_json([w.model_dump(mode="json") for w in workers])
        return EXIT_OK
    coordinators = await client.coordinators()
    print(workers_text(workers, coordinators, time.time(), output_width()))
    return EXIT_OK


def configure_runs(parser: argparse.ArgumentParser) -> Handler:
    parser.description = "List recent runs, oldest first: status, nodes done, duration."
    parser.add_argument(
        "--limit", type=number(int), default=20, metavar="N", help="at most N (default: 20)"
    )
    parser.add_argument(
        "--before",
        type=number(int),
        default=None,
        metavar="CURSOR",
        help="the next, older page of finished runs: the cursor the previous page printed",
    )
    common_arguments(parser)
    return handler(_runs)


async def _runs(client: CoordinatorClient, args: argparse.Namespace) -> int:
    from taskiq_fleet.fit import output_width
    from taskiq_fleet.tables import runs_table

    runs = await client.runs(args.limit, args.before)
    cursor = getattr(runs, "next_before", None)
    if args.json:
        print_json([r.model_dump(mode="json") for r in runs])
    elif runs:
        print(runs_table(runs, time.time(), output_width()))
    else:
        print("no runs")
    if cursor is not None:  # on stderr: --json output stays one document
        print(f"older runs: fleet runs --before {cursor}", file=sys.stderr)
    return EXIT_OK


def configure_status(parser: argparse.ArgumentParser) -> Handler:
    parser.description = (
        "Show one run and each of its nodes: status, worker, GPUs, error, and a failed "
        "node's traceback. With --watch, follow it to its end (exit 0 if it succeeded, "
        "1 if not)."
    )
    parser.add_argument("run_id", metavar="RUN", help="the run id, as printed by 'fleet submit'")
    parser.add_argument(
        "--watch", action="store_true",
        help="follow the run to its end: a progress bar on a terminal, a line per node "
        "change elsewhere, a JSON line per change with --json",
    )  # fmt: skip
    parser.add_argument(
        "--interval", type=number(float), default=WATCH_EVERY, metavar="SECONDS",
        help=f"with --watch: ask for the run's nodes every SECONDS (default: {WATCH_EVERY})",
    )  # fmt: skip
    common_arguments(parser)
    return handler(_status)


WATCH_EVERY = 0.5


async def _status(client: CoordinatorClient, args: argparse.Namespace) -> int:
    from taskiq_fleet.fit import output_width
    from taskiq_fleet.tables import status_text

    view = await client.status(args.run_id, missing_ok=True)
    if view is None:
        error(args, f"no run {args.run_id!r}")
        return EXIT_FAILURE
    if args.watch:
        return await _watch(client, args, view)
    if args.json:
        print_json(view.model_dump(mode="json"))
    else:
        print(status_text(view, time.time(), output_width()))
    return EXIT_OK


async def _watch(client: CoordinatorClient, args: argparse.Namespace, view: RunView) -> int:
    from taskiq_fleet.fit import output_width
    from taskiq_fleet.progress import progress_for
    from taskiq_fleet.tables import status_text

    handle = await client.follow(view.run_id)
    ended = asyncio.Event()
    handle.on_update(lambda update: ended.set())
    if args.json:
        show: Callable[[RunView], None] = _json_lines()
        display: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    else:
        progress = progress_for(view.submitted_at or time.time())
        show, display = (lambda v: progress.update(v.nodes)), progress
    with display:
        show(view)
        while not view.done:
            view = await _next_view(client, handle, ended, args.interval, view)
            show(view)
    if not args.json:
        print(status_text(view, time.time(), output_width()))
    if view.status != "succeeded":
        error(args, f"run {view.run_id} {view.status}: {view.error or 'no error given'}")
        return EXIT_FAILURE
    return EXIT_OK


def _json_lines() -> Callable[[RunView], None]:
    """One compact JSON line per view that differs from the last one printed."""
    last = [""]

    def show(view: RunView) -> None:
        line = json.dumps(view.model_dump(mode="json"), separators=(",", ":"))
        if line != last[0]:
            last[0] = line
            print(line, flush=True)

    return show


async def _next_view(
    client: CoordinatorClient,
    handle: RunHandle,
    ended: asyncio.Event,
    interval: float,
    last: RunView,
) -> RunView:
    """The pushed end if it comes within ``interval``, else the run as the coordinator has
    it now; the last view while no coordinator answers (a takeover), to ask again."""
    from taskiq_fleet.handles import FleetError

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(interval):
            await ended.wait()
    ended.clear()
    if handle.view is not None:
        return handle.view
    try:
        return await client.status(last.run_id, missing_ok=True) or last
    except FleetError:
        return last


def configure_cancel(parser: argparse.ArgumentParser) -> Handler:
    parser.description = "Cancel a running run: its running attempts are stopped."
    parser.add_argument("run_id", metavar="RUN", help="the run id")
    common_arguments(parser)
    return handler(_cancel)


async def _cancel(client: CoordinatorClient, args: argparse.Namespace) -> int:
    await client.cancel(args.run_id)  # FleetError (exit 1) when refused
    if args.json:
        print_json({"run_id": args.run_id, "cancelled": True})
    else:
        print(f"run {args.run_id} cancelled")
    return EXIT_OK
