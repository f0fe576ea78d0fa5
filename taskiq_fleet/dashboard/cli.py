"""``fleet dashboard``: the web dashboard, one process anywhere that reaches NATS.

The top level stays light (``fleet --help`` imports it); aiohttp, nats and the server are
imported when the command runs, and a missing ``dashboard`` extra is one line saying what
to install.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.cliargs import number, subject_prefix
from shared.connection import add_nats_arguments, prefix_from_env
from shared.logging import add_logging_arguments

if TYPE_CHECKING:
    from shared.connection import NatsSettings

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_PORT = 8470
INSTALL = "pip install 'taskiq-fleet[dashboard]'"


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.description = (
        "Serve the web dashboard: workers with their capacity, reservations and live usage, "
        "runs and their DAGs, and why work waits, updated live from what the fleet "
        "publishes. It only reads: role credentials with read-only rights are enough."
    )
    env = os.environ.get
    parser.add_argument(
        "--host",
        default=env("FLEET_DASHBOARD_HOST", "127.0.0.1"),
        help="address to listen on (default: 127.0.0.1; 0.0.0.0 for every interface; "
        "env FLEET_DASHBOARD_HOST)",
    )
    parser.add_argument(
        "--port",
        type=number(int, 0, inclusive=True, maximum=65535),
        default=env("FLEET_DASHBOARD_PORT", str(DEFAULT_PORT)),
        metavar="N",
        help=f"port to listen on (default: {DEFAULT_PORT}; 0: any free port; "
        "env FLEET_DASHBOARD_PORT)",
    )
    parser.add_argument(
        "--prefix",
        type=subject_prefix,
        default=prefix_from_env(),
        help="subject prefix of the fleet (default: fleet; env FLEET_PREFIX)",
    )
    add_nats_arguments(parser)
    add_logging_arguments(parser)
    return run_dashboard


def missing() -> str | None:
    """One line saying what to install, or None when the dashboard's libraries are there."""
    if importlib.util.find_spec("aiohttp") is None:
        return f"the dashboard needs aiohttp: {INSTALL}"
    return None


def run_dashboard(args: argparse.Namespace) -> int:
    from shared.connection import ConnectionSettingsError, settings_from_args
    from shared.logging import configure_logging

    configure_logging(args.log_level, args.log_format)
    why = missing()
    if why is not None:
        print(f"fleet dashboard: error: {why}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        nats = settings_from_args(args)
    except ConnectionSettingsError as exc:
        print(f"fleet dashboard: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_serve(nats, args.prefix, args.host, args.port))


def page_url(host: str, port: int) -> str:
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{port}/"


async def _serve(nats: NatsSettings, prefix: str, host: str, port: int) -> int:
    from shared.connection import NatsConnectError
    from shared.logging import get_logger
    from taskiq_fleet.client import CoordinatorClient
    from taskiq_fleet.dashboard.feed import Feed
    from taskiq_fleet.dashboard.server import serving

    log = get_logger("dashboard")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        client = await CoordinatorClient.connect(nats, prefix=prefix)
    except NatsConnectError as exc:
        log.error("cannot connect to NATS", error=str(exc))
        return EXIT_FAILURE
    try:
        feed = Feed(client)
        await feed.start()
        try:
            async with serving(feed, host, port) as bound:
                print(f"fleet dashboard: {page_url(host, bound)}", flush=True)
                log.info("dashboard serving", host=host, port=bound)
                await stop.wait()
        except OSError as exc:
            log.error("cannot listen", host=host, port=port, error=str(exc))
            return EXIT_FAILURE
    finally:
        await client.close()
    log.info("dashboard stopped")
    return EXIT_OK
