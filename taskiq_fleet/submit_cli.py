"""``fleet submit``: check a DAG and its inputs here, submit it, follow it to its end.

Everything the client can check (the DAG, the inputs, the options) is checked before
connecting, so a bad command line sends nothing (exit 2). While the run goes, a
progress bar on a terminal, a line per node change elsewhere (``progress.py``); at the
end, the outputs (one line each, cut to the terminal's width: ``--json`` prints them
whole), where each node ran, and each failed node's error with its traceback.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.cliargs import import_object, number
from taskiq_fleet.client_cli import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    Handler,
    UsageError,
    common_arguments,
    error,
    handler,
    print_json,
)

if TYPE_CHECKING:
    from pydantic import JsonValue

    from shared.dag import Dag, RunOptions
    from shared.wire.runs import RunUpdate, RunView
    from taskiq_fleet.client import CoordinatorClient


def configure_submit(parser: argparse.ArgumentParser) -> Handler:
    parser.description = (
        "Submit a DAG and, unless --no-wait, follow it: a progress bar on a terminal (one "
        "line per node status change elsewhere), then the outputs, where each node ran and "
        "each failed node's traceback. Exit 0 if the run succeeded, 1 if not."
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
    common_arguments(parser)
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
        error(args, "; ".join(_problem(e) for e in exc.errors(include_url=False)))
        return EXIT_USAGE
    except ValueError as exc:  # UsageError too
        error(args, str(exc))
        return EXIT_USAGE
    return handler(lambda client, a: _submit(client, a, dag, inputs, options))(args)


def _problem(problem: Any) -> str:
    where = ".".join(map(str, problem["loc"]))
    message = str(problem["msg"]).removeprefix("Value error, ")
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
    from taskiq_fleet.progress import progress_for

    await client.workers()  # FleetError, so exit 1, if no coordinator answers
    follow = not (args.json or args.no_wait)  # the end is pushed anyway
    handle = await client.submit(dag, inputs, name=args.name, options=options, progress=follow)
    if args.json and args.no_wait:
        print_json({"run_id": handle.run_id})
        return EXIT_OK
    if not args.json:
        print(f"run {handle.run_id}", flush=True)
    if args.no_wait:
        return EXIT_OK
    if not follow:
        return await _finish(client, await handle.wait(), args)
    with progress_for(time.time()) as progress:
        progress.update(handle.nodes.values())  # updates that came before the listener

        def on_update(update: RunUpdate) -> None:
            progress.update((*update.nodes, *(update.run.nodes if update.run else ())))

        handle.on_update(on_update)
        view = await handle.wait()
        progress.update(view.nodes)  # a run that ended before its updates were heard
    return await _finish(client, view, args)


async def _finish(client: CoordinatorClient, view: RunView, args: argparse.Namespace) -> int:
    from taskiq_fleet.fit import output_width
    from taskiq_fleet.tables import failures, placement_table

    # Partial outputs of a failed run: the inline ones, without fetching large ones.
    outputs = await client.outputs(view) if view.status == "succeeded" else dict(view.outputs)
    if args.json:
        print_json(
            {"run_id": view.run_id, "status": view.status, "error": view.error,
             "outputs": outputs, "run": view.model_dump(mode="json")}
        )  # fmt: skip
    else:
        width = output_width()
        print(f"run {view.run_id} {view.status}")
        if outputs:
            print("outputs:" if view.status == "succeeded" else "outputs (partial):")
            print(outputs_text(outputs, width))
        print()
        print(placement_table(view, width))
        failed = failures(view)
        if failed:
            print(f"\n{failed}")
    if view.status != "succeeded":
        error(args, f"run {view.run_id} {view.status}: {view.error or 'no error given'}")
        return EXIT_FAILURE
    return EXIT_OK


def outputs_text(outputs: dict[str, JsonValue], width: int | None) -> str:
    """``  name = value``, a line each, the value as compact JSON; a line longer than
    ``width`` is cut, saying how long the value is."""
    lines = []
    for name, value in outputs.items():
        line = f"  {name} = {json.dumps(value, separators=(', ', ': '))}"
        if width is not None and len(line) > width:
            more = f" ... ({len(line)} characters; --json prints it whole)"
            line = line[: max(0, width - len(more))] + more
        lines.append(line)
    return "\n".join(lines)
