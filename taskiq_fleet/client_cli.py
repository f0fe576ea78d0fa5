"""``fleet workers``, ``runs``, ``status``, ``cancel`` and ``submit``: the client commands.

Each talks to the coordinator through ``CoordinatorClient``. Exit codes: 0 done
(run found, cancelled, run succeeded), 1 a failure at run time (NATS
unreachable, no coordinator answering, no such run, refused cancel, run failed),
2 a bad command line (flags, MODULE:ATTR, an input, a DAG the client refuses);
in that case nothing is sent. ``--json`` prints one JSON document on stdout.
Heavy imports happen only when a command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.cliargs import import_object, number, subject_prefix
from shared.connection import add_nats_arguments, prefix_from_env

if TYPE_CHECKING:
    from shared.dag import Dag, RunOptions
    from shared.wire.runs import NodeView, RunUpdate, RunView
    from taskiq_fleet.client import CoordinatorClient, RunHandle

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
Handler = Callable[[argparse.Namespace], int]
Action = Callable[["CoordinatorClient", argparse.Namespace], Awaitable[int]]


class UsageError(ValueError):
    """A command-line value that cannot work; reported in one line, exit 2."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--prefix",
        type=subject_prefix,
        default=prefix_from_env(),
        help="subject prefix shared by the fleet (default: fleet; env FLEET_PREFIX)",
    )
    add_nats_arguments(parser)


def _error(args: argparse.Namespace, message: str) -> None:
    print(f"fleet {args.command}: error: {message}", file=sys.stderr)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _handler(action: Action) -> Handler:
    """Connect, run ``action``, and turn connection failures into one line and exit 1."""

    def handle(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(_connected(action, args))
        except UsageError as exc:
            _error(args, str(exc))
            return EXIT_USAGE
        except KeyboardInterrupt:
            goes_on = "; the run goes on ('fleet cancel RUN' stops it)" * (args.command == "submit")
            _error(args, f"interrupted{goes_on}")
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
        _error(args, str(exc))
        return EXIT_FAILURE
    try:
        return await action(client, args)
    except FleetError as exc:
        if exc.__cause__ is None:  # the coordinator answered with a refusal
            _error(args, str(exc))
        else:
            where = ", ".join(nats.servers)
            _error(
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
    _common(parser)
    return _handler(_workers)


async def _workers(client: CoordinatorClient, args: argparse.Namespace) -> int:
    from taskiq_fleet.tables import coordinators_line, workers_table

    workers = await client.workers()
    if args.json:
        _print_json([w.model_dump(mode="json") for w in workers])
        return EXIT_OK
    print(coordinators_line(await client.coordinators()))
    if workers:
        print(workers_table(workers, time.time()))
    else:
        print("no workers")
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
    _common(parser)
    return _handler(_runs)


async def _runs(client: CoordinatorClient, args: argparse.Namespace) -> int:
    from taskiq_fleet.tables import runs_table

    runs = await client.runs(args.limit, args.before)
    cursor = getattr(runs, "next_before", None)
    if args.json:
        _print_json([r.model_dump(mode="json") for r in runs])
    elif runs:
        print(runs_table(runs, time.time()))
    else:
        print("no runs")
    if cursor is not None:  # on stderr: --json output stays one document
        print(f"older runs: fleet runs --before {cursor}", file=sys.stderr)
    return EXIT_OK


def configure_status(parser: argparse.ArgumentParser) -> Handler:
    parser.description = "Show one run and each of its nodes: status, worker, GPUs, error."
    parser.add_argument("run_id", metavar="RUN", help="the run id, as printed by 'fleet submit'")
    _common(parser)
    return _handler(_status)


async def _status(client: CoordinatorClient, args: argparse.Namespace) -> int:
    from taskiq_fleet.tables import status_text

    view = await client.status(args.run_id, missing_ok=True)
    if view is None:
        _error(args, f"no run {args.run_id!r}")
        return EXIT_FAILURE
    if args.json:
        _print_json(view.model_dump(mode="json"))
    else:
        print(status_text(view, time.time()))
    return EXIT_OK


def configure_cancel(parser: argparse.ArgumentParser) -> Handler:
    parser.description = "Cancel a running run: its running attempts are stopped."
    parser.add_argument("run_id", metavar="RUN", help="the run id")
    _common(parser)
    return _handler(_cancel)


async def _cancel(client: CoordinatorClient, args: argparse.Namespace) -> int:
    await client.cancel(args.run_id)  # FleetError (exit 1) when refused
    if args.json:
        _print_json({"run_id": args.run_id, "cancelled": True})
    else:
        print(f"run {args.run_id} cancelled")
    return EXIT_OK


# -- submit ------------------------------------------------------------------------------------


def configure_submit(parser: argparse.ArgumentParser) -> Handler:
    parser.description = (
        "Submit a DAG and, unless --no-wait, follow it: one line per node status change, "
        "then the outputs and where each node ran. Exit 0 if the run succeeded, 1 if not."
    )
    parser.add_argument(
        "dag", metavar="MODULE:ATTR", help="a shared.dag.Dag, or a function of no arguments "
        "returning one; the current directory is searched first",
    )  # fmt: skip
    parser.add_argument(
        "--input", action="append", default=[], metavar="NAME=JSON",
        help="an external input, as JSON (repeatable): --input n=3 --input text='\"hi\"'",
    )  # fmt: skip
    parser.add_argument(
        "--input-file", action="append", default=[], metavar="NAME=PATH",
        help="an external input read from a JSON file (repeatable)",
    )  # fmt: skip
    parser.add_argument("--name", default="", help="a name for the run, shown by 'fleet runs'")
    parser.add_argument(
        "--max-parallel", type=number(int), metavar="N", help="at most N nodes at a time"
    )
    parser.add_argument(
        "--on-error", choices=("stop", "continue"), default="stop",
        help="on a failed node: stop the run, or continue with what does not depend on it "
        "(default: stop)",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=number(float), metavar="SECONDS",
        help="the coordinator fails the run if it is not done after SECONDS",
    )  # fmt: skip
    parser.add_argument("--priority", type=int, default=0, help="higher runs first (default: 0)")
    parser.add_argument(
        "--no-wait", action="store_true", help="print the run id and return at once"
    )
    _common(parser)
    return run_submit


def run_submit(args: argparse.Namespace) -> int:
    """Everything the client can check is checked before connecting."""
    from pydantic import ValidationError

    from shared.dag import RunOptions
    from shared.wire.runs import Submit

    try:
        dag = load_dag(args.dag)
        inputs = parse_inputs(args.input, args.input_file)
        options = RunOptions(
            max_parallel=args.max_parallel,
            on_error=args.on_error,
            timeout=args.timeout,
            priority=args.priority,
        )
        Submit(run_id="check", name=args.name, dag=dag, inputs=inputs, options=options)
    except ValidationError as exc:
        _error(args, "; ".join(_problem(e) for e in exc.errors(include_url=False)))
        return EXIT_USAGE
    except ValueError as exc:  # UsageError too
        _error(args, str(exc))
        return EXIT_USAGE
    return _handler(lambda client, a: _submit(client, a, dag, inputs, options))(args)


def _problem(error: Any) -> str:
    where = ".".join(map(str, error["loc"]))
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def load_dag(spec: str, search_path: Path | None = None) -> Dag:
    """The DAG ``MODULE:ATTR`` names, calling ATTR if it is a function; UsageError if none."""
    from shared.dag import Dag

    try:
        target = import_object(
            spec, form="expected MODULE:ATTR naming a DAG", search_path=search_path
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not isinstance(target, Dag) and callable(target):
        try:
            target = target()
        except Exception as exc:
            raise UsageError(f"{spec}(): {type(exc).__name__}: {exc}") from None
    if not isinstance(target, Dag):
        raise UsageError(
            f"{spec!r} is a {type(target).__name__}, not a shared.dag.Dag "
            "or a function of no arguments returning one"
        )
    return target


def parse_inputs(pairs: list[str], files: list[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for flag, form, items in (("--input", "JSON", pairs), ("--input-file", "PATH", files)):
        for item in items:
            name, sep, text = item.partition("=")
            if not sep or not name:
                raise UsageError(f"{flag} {item!r}: expected NAME={form}")
            if name in inputs:
                raise UsageError(f"{flag} {item!r}: input {name!r} is given twice")
            where = f"{flag} {name}"
            if flag == "--input-file":
                try:
                    text = Path(text).expanduser().read_text(encoding="utf-8")
                except OSError as exc:
                    raise UsageError(f"{where}: cannot read {text}: {exc.strerror}") from None
                except UnicodeDecodeError:
                    raise UsageError(f"{where}: {text} is not UTF-8 text") from None
            try:
                inputs[name] = json.loads(text)
            except json.JSONDecodeError as exc:
                hint = "" if flag == "--input-file" else "; a string needs quotes: '\"text\"'"
                raise UsageError(f"{where}: not valid JSON ({exc}){hint}") from None
    return inputs


async def _submit(
    client: CoordinatorClient,
    args: argparse.Namespace,
    dag: Dag,
    inputs: dict[str, Any],
    options: RunOptions,
) -> int:
    await client.workers()  # FleetError, so exit 1, if no coordinator answers
    progress = not (args.json or args.no_wait)  # the end is pushed anyway
    handle = await client.submit(dag, inputs, name=args.name, options=options, progress=progress)
    if args.json and args.no_wait:
        _print_json({"run_id": handle.run_id})
        return EXIT_OK
    if not args.json:
        print(f"run {handle.run_id}", flush=True)
    if args.no_wait:
        return EXIT_OK
    show = _follow(handle) if progress else None
    view = await handle.wait()
    if show is not None:
        show(view.nodes)  # a run that ended before its updates were heard
    return await _finish(client, view, args)


def _follow(handle: RunHandle) -> Callable[[Iterable[NodeView]], None]:
    """Print a line whenever a node's status changes; returns the printer."""
    from taskiq_fleet.tables import node_change

    seen: dict[str, str] = {}

    def show(nodes: Iterable[NodeView]) -> None:
        for node in nodes:
            if seen.get(node.id) != node.status:
                seen[node.id] = node.status
                print(node_change(node), flush=True)

    def on_update(update: RunUpdate) -> None:
        show(update.nodes)
        if update.run is not None:
            show(update.run.nodes)

    show(list(handle.nodes.values()))  # updates that came before the listener
    handle.on_update(on_update)
    return show


async def _finish(client: CoordinatorClient, view: RunView, args: argparse.Namespace) -> int:
    from taskiq_fleet.tables import placement_table

    # Partial outputs of a failed run: the inline ones, without fetching large ones.
    outputs = await client.outputs(view) if view.status == "succeeded" else dict(view.outputs)
    if args.json:
        _print_json(
            {"run_id": view.run_id, "status": view.status, "error": view.error,
             "outputs": outputs, "run": view.model_dump(mode="json")}
        )  # fmt: skip
    else:
        print(f"run {view.run_id} {view.status}")
        if outputs:
            print("outputs:" if view.status == "succeeded" else "outputs (partial):")
            print(json.dumps(outputs, indent=2))
        print()
        print(placement_table(view))
    if view.status != "succeeded":
        _error(args, f"run {view.run_id} {view.status}: {view.error or 'no error given'}")
        return EXIT_FAILURE
    return EXIT_OK
