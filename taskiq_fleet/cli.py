"""The ``fleet`` command.

Each subcommand's module adds its arguments; the heavy imports (the coordinator's
service, nats, taskiq, the user's app) happen only when a subcommand runs, so
``fleet --help`` stays fast and an agent host never imports the coordinator's
service code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from coordinator import cli as coordinator_cli
from shared.version import __version__
from taskiq_fleet import client_cli, completion, submit_cli, up_cli
from taskiq_fleet.dashboard import cli as dashboard_cli
from worker_agent import cli as agent_cli

Handler = Callable[[argparse.Namespace], int]
Configure = Callable[[argparse.ArgumentParser], Handler]

SUBCOMMANDS: dict[str, tuple[str, Configure]] = {
    "agent": ("run a worker agent on this host", agent_cli.configure),
    "coordinator": ("run the coordinator service", coordinator_cli.configure),
    "submit": ("submit a DAG and follow its run", submit_cli.configure_submit),
    "status": ("show a run and its nodes", client_cli.configure_status),
    "runs": ("list recent runs", client_cli.configure_runs),
    "cancel": ("cancel a running run", client_cli.configure_cancel),
    "workers": ("list the workers and their capacity", client_cli.configure_workers),
    "up": ("start a local fleet: nats-server, coordinator, agents", up_cli.configure),
    "dashboard": ("serve the web dashboard of a fleet", dashboard_cli.configure),
    "completion": ("print a shell completion script (bash, zsh, fish)", completion.configure),
}
"""name -> (one-line help, function that adds the arguments and returns the handler);
those modules are imported to build the parser, so keep their top level light."""

EXIT_USAGE = 2
EXIT_CLOSED_PIPE = 141
"""What a shell reports for a program that SIGPIPE stopped, as ``yes | head -1`` does."""


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    parser = argparse.ArgumentParser(
        prog="fleet",
        description=(
            "taskiq-fleet: resource-aware distributed scheduling for taskiq. Agents advertise "
            "CPU, RAM, GPUs and labels over NATS; the coordinator routes each task to a worker "
            "that fits."
        ),
    )
    parser.add_argument("--version", action="version", version=f"taskiq-fleet {__version__}")
    handlers: dict[str, Handler] = {}
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, configure) in SUBCOMMANDS.items():
        handlers[name] = configure(sub.add_parser(name, help=help_text, description=help_text))
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    command = getattr(args, "command", None)
    if command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        code = handlers[command](args)
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_gone()
    return code


def _reader_gone() -> int:
    """stdout's reader has gone (``fleet runs | head -1``): stop without a traceback.

    Output still buffered would fail again when Python flushes it at exit, with an
    "Exception ignored" message; pointing stdout at /dev/null lets that flush succeed.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_CLOSED_PIPE


if __name__ == "__main__":
    sys.exit(main())
