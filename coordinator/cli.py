"""``fleet coordinator``: the scheduler service, one (active) per fleet."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.cliargs import add_metrics_arguments, number, subject_prefix
from shared.connection import add_nats_arguments, prefix_from_env
from shared.logging import add_logging_arguments
from shared.resources import POLICY_NAMES

if TYPE_CHECKING:
    from coordinator.service import CoordinatorSettings
    from coordinator.standby import Fleet
    from shared.connection import NatsSettings
    from shared.jetstream import Retention

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_PIPELINE = 64
DEFAULT_MAX_HEARTBEATS = 1000.0
"""About a tenth of a core for reading heartbeats at most; 10,000 agents beat every 16 s."""


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.description = (
        "Run the coordinator: keep the live worker pool from agents' heartbeats, place every "
        "node of submitted DAGs on a worker that fits, and track reservations until each ends."
    )
    env = os.environ.get
    parser.add_argument(
        "--policy",
        choices=POLICY_NAMES,
        default=env("FLEET_POLICY", "hybrid"),
        help="placement policy (default: hybrid; env FLEET_POLICY)",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=number(int, 1, inclusive=True),
        default=3,
        metavar="N",
        help="a worker silent for N of its heartbeat intervals is lost (default: 3)",
    )
    parser.add_argument(
        "--infeasible-grace",
        type=number(float, 0, inclusive=True),
        default=0.0,
        metavar="SECONDS",
        help="how long a run with a node no worker could ever hold waits for one to join "
        "(default: 0, fail at once)",
    )
    parser.add_argument(
        "--lost-worker-grace",
        type=number(float, 0, inclusive=True),
        default=30.0,
        metavar="SECONDS",
        help="how long work that a worker lost moments ago could hold waits for it to come "
        "back before failing as infeasible (default: 30; --infeasible-grace is for work no "
        "worker could hold)",
    )
    parser.add_argument(
        "--max-parallel",
        type=number(int, 1, inclusive=True),
        default=None,
        metavar="N",
        help="global cap on attempts in flight (default: none)",
    )
    parser.add_argument(
        "--pipeline-depth",
        type=number(int, 1, inclusive=True),
        default=DEFAULT_PIPELINE,
        metavar="N",
        help="attempts of one task shape a busy worker may be sent at once, to run one after "
        "another under one reservation (worker leases; no GPU requests): at most N, fewer "
        "the longer the shape's attempts run (about 20 ms of queued work); a node that "
        "waits for one such attempt alone is sent after it the same way (chains); 1 turns "
        "both off "
        f"(default: {DEFAULT_PIPELINE})",
    )
    parser.add_argument(
        "--max-heartbeats",
        type=number(float, 0, inclusive=True),
        default=DEFAULT_MAX_HEARTBEATS,
        metavar="N",
        help="heartbeats a second the fleet's agents are paced to at most: a large fleet is "
        "told to beat less often (a power of two times 0.5 s), so reading them stays cheap; "
        f"0 leaves agents at their own intervals (default: {DEFAULT_MAX_HEARTBEATS:g})",
    )
    parser.add_argument(
        "--system-retries",
        type=number(int, 0, inclusive=True),
        default=3,
        metavar="N",
        help="re-placements of a node whose worker was lost (default: 3)",
    )
    parser.add_argument(
        "--lease-ttl",
        type=number(float, 0.3, inclusive=True),
        default=1.5,
        metavar="SECONDS",
        help="leader lease: a standby coordinator takes over when the leader has not "
        "renewed it for this long (default: 1.5)",
    )
    parser.add_argument(
        "--prefix",
        type=subject_prefix,
        default=prefix_from_env(),
        help="subject prefix shared by the fleet (default: fleet; env FLEET_PREFIX)",
    )
    _add_retention_arguments(parser)
    add_metrics_arguments(parser)
    add_nats_arguments(parser)
    add_logging_arguments(parser)
    return run_coordinator


def _add_retention_arguments(parser: argparse.ArgumentParser) -> None:
    """Age, count and byte limits of what is kept; set again at every start."""
    group = parser.add_argument_group("retention (set on the streams and bucket at start)")
    for what, name in (("runs", "finished runs"), ("streams", "submissions and outcomes")):
        group.add_argument(
            f"--{what}-max-age",
            type=number(float, 0, inclusive=True),
            default=7 * 24 * 3600.0,
            metavar="SECONDS",
            help=f"keep {name} this long (default: 7 days; 0: no age limit)",
        )
        group.add_argument(
            f"--{what}-max-count",
            type=number(int, -1, inclusive=True),
            default=-1,
            metavar="N",
            help=f"keep at most N {name}, dropping the oldest (default: -1, no limit)",
        )
        group.add_argument(
            f"--{what}-max-bytes",
            type=number(int, -1, inclusive=True),
            default=-1,
            metavar="BYTES",
            help=f"keep at most this many bytes of {name}, dropping the oldest "
            "(default: -1, no limit)",
        )


def _retention(args: argparse.Namespace) -> Retention:
    from shared.jetstream import Limits, Retention

    def limits(what: str) -> Limits:
        return Limits(
            max_age=getattr(args, f"{what}_max_age"),
            max_msgs=getattr(args, f"{what}_max_count"),
            max_bytes=getattr(args, f"{what}_max_bytes"),
        )

    return Retention(streams=limits("streams"), runs=limits("runs"))


def run_coordinator(args: argparse.Namespace) -> int:
    from coordinator.leadership import LeaseTiming
    from coordinator.scheduling.machine import SchedulerConfig
    from coordinator.service import CoordinatorSettings
    from shared.connection import ConnectionSettingsError, settings_from_args
    from shared.logging import configure_logging
    from shared.metrics import missing
    from shared.wire.subjects import Subjects

    configure_logging(args.log_level, args.log_format)
    try:
        if args.metrics_port is not None and (why := missing()):
            raise ValueError(why)
        nats = settings_from_args(args)
        settings = CoordinatorSettings(
            subjects=Subjects(args.prefix),
            policy=args.policy,
            scheduler=SchedulerConfig(
                heartbeat_misses=args.heartbeat_timeout,
                infeasible_grace=args.infeasible_grace,
                lost_worker_grace=args.lost_worker_grace,
                max_parallel=args.max_parallel,
                system_retries=args.system_retries,
                pipeline=args.pipeline_depth,
                max_heartbeats=args.max_heartbeats,
            ),
            retention=_retention(args),
            lease=LeaseTiming(ttl=args.lease_ttl),
        )
    except (ConnectionSettingsError, ValueError) as exc:
        print(f"fleet coordinator: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    metrics = None if args.metrics_port is None else (args.metrics_host, args.metrics_port)
    return asyncio.run(_serve(settings, nats, metrics))


async def _serve(
    settings: CoordinatorSettings, nats: NatsSettings, metrics: tuple[str, int] | None = None
) -> int:
    from coordinator.standby import Fleet
    from shared.connection import NatsConnectError, connect
    from shared.logging import get_logger

    log = get_logger("coordinator")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    coordinator = Fleet(settings)
    try:
        stop_metrics = _metrics(coordinator, metrics)
    except OSError as exc:
        log.error("cannot serve metrics", port=metrics and metrics[1], error=str(exc))
        return EXIT_FAILURE
    try:
        nc = await connect(
            nats,
            name="fleet-coordinator",
            disconnected_cb=coordinator.disconnected,
            reconnected_cb=coordinator.reconnected,
        )
    except NatsConnectError as exc:
        log.error("cannot connect to NATS", error=str(exc))
        stop_metrics()
        return EXIT_FAILURE
    try:
        await coordinator.run(nc, stop)
    finally:
        await nc.close()
        stop_metrics()
    log.info("coordinator stopped")
    return EXIT_OK


def _metrics(fleet: Fleet, where: tuple[str, int] | None) -> Callable[[], None]:
    """Serve the Prometheus page of whichever term this process serves; returns what stops
    it."""
    if where is None:
        return lambda: None
    from coordinator.metrics_export import CoordinatorMetrics
    from shared.logging import get_logger
    from shared.metrics import serve

    stop = serve(where[1], where[0], CoordinatorMetrics(lambda: fleet.current).collect)
    get_logger("coordinator").info("metrics served", host=where[0], port=where[1])
    return stop
