"""``fleet agent APP``: one command per host.

Everything that can be wrong with the command line (flags, the APP, the NATS
options, the GPU spec) is checked before connecting, and reported in one line
with exit code 2, as argparse does for its own errors. Heavy imports (nats,
taskiq, the user's APP) happen only when the command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.cliargs import add_metrics_arguments, number, subject_prefix
from shared.connection import add_nats_arguments, prefix_from_env
from shared.logging import add_logging_arguments

if TYPE_CHECKING:
    from taskiq import AsyncBroker

    from shared.connection import NatsSettings
    from shared.resources import WorkerSpec
    from worker_agent.service import Agent, AgentSettings

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.description = (
        "Run a worker agent: detect this host's CPU cores, RAM and GPUs (cgroup-aware), "
        "advertise them over NATS, and run the taskiq tasks of APP that the coordinator "
        "assigns, within that capacity."
    )
    env = os.environ.get
    parser.add_argument("app", metavar="APP", help="the taskiq broker, as module:attribute")
    host = parser.add_argument_group("this worker")
    host.add_argument(
        "--name",
        default=env("FLEET_AGENT_NAME"),
        help="worker name, unique in the fleet; letters, digits, '_' and '-' "
        "(default: the hostname; env FLEET_AGENT_NAME)",
    )
    host.add_argument(
        "--labels",
        default=env("FLEET_AGENT_LABELS"),
        metavar="K=V,...",
        help="labels added to the automatic ones (hostname, os, arch, gpu_models); "
        "env FLEET_AGENT_LABELS",
    )
    host.add_argument(
        "--resources",
        default=env("FLEET_AGENT_RESOURCES"),
        metavar="NAME=N,...",
        help="custom countable resources this host offers to tasks that ask for them "
        "(ResourceProfile(resources={...})), e.g. 'licenses=4,fpga=1'; "
        "env FLEET_AGENT_RESOURCES",
    )
    host.add_argument("--cpus", type=number(float), metavar="N", help="advertise N cores instead")
    host.add_argument(
        "--ram-mb", type=number(int), metavar="N", help="advertise N MB of RAM instead"
    )
    host.add_argument(
        "--gpus",
        metavar="SPEC",
        help="GPU devices instead of NVML's: '2xL4:24576' (count x model : MB), "
        "'A100:40960,A100:40960', or '0' for none",
    )
    host.add_argument(
        "--headroom",
        metavar="SPEC",
        help="capacity kept back for the host: 'cpu=0.5,ram_mb=1024' or '10%%'",
    )
    run = parser.add_argument_group("serving")
    run.add_argument(
        "--heartbeat",
        type=number(float),
        default=2.0,
        metavar="SECONDS",
        help="heartbeat interval (default: 2)",
    )
    run.add_argument(
        "--drain-timeout",
        type=number(float, inclusive=True),
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long running attempts may finish before they are "
        "cancelled (default: 30); a second signal stops at once",
    )
    run.add_argument(
        "--prefix",
        type=subject_prefix,
        default=prefix_from_env(),
        help="subject prefix shared by the fleet (default: fleet; env FLEET_PREFIX)",
    )
    run.add_argument(
        "--max-threads",
        type=number(int),
        metavar="N",
        help="threads for sync tasks (default: Python's)",
    )
    run.add_argument(
        "--payload-cache-mb",
        type=number(int, inclusive=True),
        metavar="MB",
        help="memory for large values read lately, which later tasks here read again "
        f"without fetching them (default: {PAYLOAD_CACHE_MB}, or a {RAM_SHARE}th of the "
        "RAM this worker advertises if that is less; 0 keeps none)",
    )
    add_metrics_arguments(parser)
    add_nats_arguments(parser)
    add_logging_arguments(parser)
    return run_agent


PAYLOAD_CACHE_MB = 256
RAM_SHARE = 16


def payload_cache_bytes(flag_mb: int | None, ram_mb: int) -> int:
    """The flag's, else 256 MiB, or a sixteenth of the advertised RAM on a small host: the
    agent's own memory is not among what it advertises for tasks."""
    mb = min(PAYLOAD_CACHE_MB, ram_mb // RAM_SHARE) if flag_mb is None else flag_mb
    return mb << 20


def run_agent(args: argparse.Namespace) -> int:
    from shared.connection import ConnectionSettingsError, settings_from_args
    from shared.logging import configure_logging, get_logger
    from shared.metrics import missing
    from shared.wire.subjects import Subjects, as_token, token
    from worker_agent.app import AppError, load_broker
    from worker_agent.inventory import detect, parse_labels
    from worker_agent.service import AgentSettings

    configure_logging(args.log_level, args.log_format)
    log = get_logger("worker_agent")
    try:
        nats = settings_from_args(args)
        name = token(args.name) if args.name else as_token(socket.gethostname())
        inventory = detect(
            cpus=args.cpus,
            ram_mb=args.ram_mb,
            gpus=args.gpus,
            headroom=args.headroom,
            labels=parse_labels(args.labels),
            resources=args.resources,
            name=name,
        )
        settings = AgentSettings(
            heartbeat=args.heartbeat,
            drain_timeout=args.drain_timeout,
            subjects=Subjects(args.prefix),
            max_threads=args.max_threads,
            payload_cache=payload_cache_bytes(args.payload_cache_mb, inventory.spec.ram_mb),
        )
        broker = load_broker(args.app)
        if args.metrics_port is not None and (why := missing()):
            raise ValueError(why)
    except (AppError, ConnectionSettingsError, ValueError) as exc:
        print(f"fleet agent: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    spec = inventory.spec
    log.info(
        "capacity",
        worker=spec.name,
        cpu=spec.cpu,
        ram_mb=spec.ram_mb,
        gpus=[g.model_dump() for g in spec.gpus],
        resources=spec.resources,
        labels=spec.labels,
        notes=list(inventory.notes),
    )
    metrics = None if args.metrics_port is None else (args.metrics_host, args.metrics_port)
    code = asyncio.run(_serve(broker, spec, settings, nats, metrics))
    _exit_despite_stuck_threads(code)
    return code


async def _serve(
    broker: AsyncBroker,
    spec: WorkerSpec,
    settings: AgentSettings,
    nats: NatsSettings,
    metrics: tuple[str, int] | None = None,
) -> int:
    from shared.connection import NatsConnectError, connect, inbox_prefix
    from shared.logging import get_logger
    from worker_agent.service import Agent

    log = get_logger("worker_agent")
    stop, force = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal: stopping now", signal=signal.Signals(signum).name)
            force.set()
        else:
            log.info("stopping: draining first", signal=signal.Signals(signum).name)
            stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    agent = Agent(broker, spec, settings)
    try:
        stop_metrics = _metrics(agent, broker, metrics)
    except OSError as exc:
        log.error("cannot serve metrics", port=metrics and metrics[1], error=str(exc))
        return EXIT_FAILURE
    try:
        nc = await connect(
            nats,
            name=f"fleet-agent-{spec.name}",
            inbox_prefix=inbox_prefix(nats),
            disconnected_cb=agent.disconnected,
            reconnected_cb=agent.reconnected,
            error_cb=agent.nats_error,
        )
    except NatsConnectError as exc:
        log.error("cannot connect to NATS", error=str(exc))
        stop_metrics()
        return EXIT_FAILURE
    try:
        await agent.run(nc, stop, force)
    finally:
        await nc.close()
        stop_metrics()
    log.info("agent stopped")
    return EXIT_OK


def _metrics(
    agent: Agent, broker: AsyncBroker, where: tuple[str, int] | None
) -> Callable[[], None]:
    """Serve the agent's Prometheus page, timing tasks through a middleware on the app's
    broker (``worker_agent/metrics.py``); returns what stops it."""
    if where is None:
        return lambda: None
    from shared.logging import get_logger
    from shared.metrics import serve
    from worker_agent.metrics import AgentMetrics, TaskTimes

    times = TaskTimes()
    broker.add_middlewares(times)
    stop = serve(where[1], where[0], AgentMetrics(agent, times).collect)
    get_logger("worker_agent").info("metrics served", host=where[0], port=where[1])
    return stop


def _exit_despite_stuck_threads(code: int) -> None:
    """A sync task past its timeout still holds a thread that interpreter exit would join."""
    stuck = [t.name for t in threading.enumerate() if t.name.startswith("fleet-task")]
    if stuck:
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(code)
