"""The ``fleet`` command.

Subcommands register themselves in ``SUBCOMMANDS``; each one's module is
imported only when it runs, so ``fleet --help`` stays fast and an agent host
never imports the coordinator's service code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from shared.version import __version__

Handler = Callable[[argparse.Namespace], int]
Configure = Callable[[argparse.ArgumentParser], Handler]

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "agent": ("run a worker agent on this host", "worker_agent.cli:configure"),
    "coordinator": ("run the coordinator service", "coordinator.serve_cli:configure"),
    "submit": ("submit a DAG and follow its run", "coordinator.client_cli:configure_submit"),
    "status": ("show a run and its nodes", "coordinator.client_cli:configure_status"),
    "runs": ("list recent runs", "coordinator.client_cli:configure_runs"),
    "cancel": ("cancel a running run", "coordinator.client_cli:configure_cancel"),
    "workers": ("list the workers and their capacity", "coordinator.client_cli:configure_workers"),
    "up": ("start a local fleet: nats-server, coordinator, agents", "coordinator.up_cli:configure"),
}
"""name -> (one-line help, ``module:function`` that adds the arguments and returns the
handler); the module is imported only to build the parser, so keep its top level light."""

EXIT_USAGE = 2


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
    if SUBCOMMANDS:
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        for name, (help_text, target) in SUBCOMMANDS.items():
            module, _, attr = target.partition(":")
            configure: Configure = getattr(importlib.import_module(module), attr)
            handlers[name] = configure(sub.add_parser(name, help=help_text, description=help_text))
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    command = getattr(args, "command", None)
    if command is None:
        parser.print_help()
        return EXIT_USAGE
    return handlers[command](args)


if __name__ == "__main__":
    sys.exit(main())
