"""``fleet up``: a whole fleet on this host with one command.

Starts an embedded nats-server (or uses ``--nats URL``), a coordinator and local agents
(``--agents N`` identical ones, or each described in ``--config FILE``), prints where
everything is and how to use it, then waits. Ctrl-C or SIGTERM stops everything in
order (agents drain first) and exits 0; a second signal kills at once. Exit codes: 0
stopped cleanly, 1 something failed at run time (a process would not start, ended on
its own, or had to be killed), 2 a bad command line or config file, reported in one
line before anything starts. Heavy imports happen only when the command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.cliargs import number, subject_prefix
from shared.connection import prefix_from_env
from shared.resources import POLICY_NAMES
from taskiq_fleet.local_cluster import (
    DEFAULT_APP,
    ClusterError,
    ConfigError,
    LocalCluster,
    identical_agents,
    load_config,
)

if TYPE_CHECKING:
    from shared.resources import GPUDevice

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_AGENTS = 2
DEMO_DAG = "taskiq_fleet.demo.pipelines:chain"
"""What to submit to agents serving the default app (``DEFAULT_APP``)."""
HOST_LABELS = ("hostname", "os", "arch")
"""Labels every local agent has alike; the agents table leaves them out."""


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.description = (
        "Start a local fleet: an embedded nats-server with JetStream (or --nats URL), a "
        "coordinator and agents, each its own process, everything under one state "
        "directory. Prints where everything is; Ctrl-C or SIGTERM stops it all."
    )
    agents = parser.add_mutually_exclusive_group()
    agents.add_argument(
        "--agents",
        type=number(int, 1, inclusive=True),
        metavar="N",
        help=f"N identical agents, each detecting this host (default: {DEFAULT_AGENTS})",
    )
    agents.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML file describing each agent (name, app, cpus, ram_mb, gpus, resources, "
        "labels, headroom); see examples/cluster.toml",
    )
    parser.add_argument(
        "--app",
        default=DEFAULT_APP,
        metavar="MODULE:BROKER",
        help="the taskiq broker the agents serve, unless the config names one "
        f"(default: {DEFAULT_APP})",
    )
    parser.add_argument(
        "--nats",
        metavar="URL",
        help="use this NATS server instead of starting one",
    )
    parser.add_argument(
        "--port",
        type=number(int, 0, inclusive=True, maximum=65535),
        metavar="N",
        help="port of the embedded nats-server on 127.0.0.1 "
        "(default: 4222 if free, else any free port; 0: any free port)",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the JetStream store, the logs and the processes' temporary files go; "
        "kept on exit (default: a fresh temporary directory, removed on a clean stop)",
    )
    env = os.environ.get
    parser.add_argument(
        "--policy",
        choices=POLICY_NAMES,
        default=env("FLEET_POLICY", "hybrid"),
        help="the coordinator's placement policy (default: hybrid; env FLEET_POLICY)",
    )
    parser.add_argument(
        "--prefix",
        type=subject_prefix,
        default=prefix_from_env(),
        help="subject prefix of this fleet (default: fleet; env FLEET_PREFIX)",
    )
    parser.add_argument(
        "--no-dashboard",
        action="store_true",
        help="start no web dashboard (by default one is started when the 'dashboard' extra "
        "is installed)",
    )
    return run_up


def _error(message: str) -> None:
    print(f"fleet up: error: {message}", file=sys.stderr, flush=True)


def build_cluster(args: argparse.Namespace) -> LocalCluster:
    """The cluster the command line describes; ``ConfigError`` for anything wrong in it."""
    from pydantic import ValidationError

    from shared.connection import NatsSettings

    if args.nats is not None:
        try:
            NatsSettings(servers=(args.nats,))
        except ValidationError as exc:
            message = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
            raise ConfigError(f"--nats: {message}") from None
        if args.port is not None:
            raise ConfigError("--port is for the embedded nats-server; --nats uses another")
    if args.config is not None:
        agents = load_config(args.config, default_app=args.app)
    else:
        agents = identical_agents(args.agents or DEFAULT_AGENTS, args.app)
    return LocalCluster(
        agents,
        nats_url=args.nats,
        state_dir=args.state_dir,
        port=args.port,
        policy=args.policy,
        prefix=args.prefix,
        dashboard=not args.no_dashboard,
    )


def run_up(args: argparse.Namespace) -> int:
    from taskiq_fleet.natsserver import NatsServerNotFoundError, find_nats_server

    try:
        cluster = build_cluster(args)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    try:
        if cluster.external_url is None:
            find_nats_server()  # before anything starts or prints: the one line says it all
    except NatsServerNotFoundError as exc:
        _error(str(exc))
        return EXIT_FAILURE
    note = ""
    if args.config is None and len(cluster.agents) > 1:
        note = (
            f"note: the {len(cluster.agents)} agents share this host and each advertises all "
            "of it; --config FILE states each one's capacity"
        )
    return asyncio.run(_up(cluster, note))


async def _up(cluster: LocalCluster, note: str) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            print(f"fleet up: {name} again: killing every process now", flush=True)
            cluster.kill()
        else:
            server = ", nats-server" if cluster.external_url is None else ""
            print(f"fleet up: {name}: stopping agents (they drain), coordinator{server}")
            sys.stdout.flush()
            stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    code = EXIT_OK
    stopping = asyncio.create_task(stop.wait())
    try:
        print(f"fleet up: starting {_parts(cluster)}", flush=True)
        begun = time.monotonic()
        starting = asyncio.create_task(cluster.start())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # a signal during start-up: start() stops what it started
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return EXIT_OK if await cluster.stop() else EXIT_FAILURE
        starting.result()
        print(describe(cluster))
        if note:
            print(f"\n{note}")
        print(
            f"\nfleet up: ready in {time.monotonic() - begun:.1f}s; "
            "Ctrl-C or SIGTERM stops everything",
            flush=True,
        )
        watching = asyncio.create_task(cluster.watch())
        await asyncio.wait({stopping, watching}, return_when=asyncio.FIRST_COMPLETED)
        if watching.done():
            _error(f"{watching.result()}\nstopping the rest")
            code = EXIT_FAILURE
        watching.cancel()
    except ClusterError as exc:
        _error(str(exc))
        code = EXIT_FAILURE
    finally:
        stopping.cancel()
        clean = await cluster.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        print(f"fleet up: {_stopped_text(cluster, clean)}", flush=True)
    return code if clean else EXIT_FAILURE


def _parts(cluster: LocalCluster) -> str:
    count = len(cluster.agents)
    agents = f"{count} agent{'s' * (count != 1)}"
    server = "nats-server, " if cluster.external_url is None else ""
    return f"{server}a coordinator and {agents}"


def _stopped_text(cluster: LocalCluster, clean: bool) -> str:
    how = "stopped" if clean else "stopped; some process had to be killed or failed"
    if cluster.state_removed:
        return f"{how}; removed the temporary state dir"
    try:
        where = cluster.state_dir
    except RuntimeError:  # never got one (e.g. the state dir was locked by another cluster)
        return how
    return f"{how}; state and logs kept in {where}"


# -- what is where -----------------------------------------------------------------------------


def gpu_text(gpus: tuple[GPUDevice, ...]) -> str:
    """Devices in ``--gpus`` syntax, alike ones counted: ``2xL4:24576,1xA100:40960``."""
    groups: dict[tuple[str, int], int] = {}
    for gpu in gpus:
        groups[(gpu.model, gpu.memory_mb)] = groups.get((gpu.model, gpu.memory_mb), 0) + 1
    return ",".join(
        f"{n}x{model}" + (f":{memory}" if memory else "") for (model, memory), n in groups.items()
    )


def agents_table(cluster: LocalCluster) -> str:
    from taskiq_fleet.tables import NONE, amounts, labels, number, table

    pids = cluster.pids()
    apps = {a.name: a.app for a in cluster.agents}
    rows = [
        [
            w.spec.name,
            number(w.spec.cpu),
            str(w.spec.ram_mb),
            gpu_text(w.spec.gpus) or NONE,
            labels({k: v for k, v in w.spec.labels.items() if k not in HOST_LABELS}),
            amounts(w.spec.resources),
            apps[w.spec.name],
            str(pids.get(f"agent {w.spec.name}", NONE)),
        ]
        for w in cluster.workers
    ]
    return table(("agent", "cpus", "ram MB", "gpus", "labels", "resources", "app", "pid"), rows)


def describe(cluster: LocalCluster) -> str:
    """Where everything is and how to use it, for the terminal that ran ``fleet up``."""
    url = cluster.nats_url
    pids = cluster.pids()
    state = str(cluster.state_dir)
    if cluster.temporary_state:
        state += " (temporary: removed on a clean stop; --state-dir DIR keeps it)"
    server = (
        f"embedded nats-server, pid {pids['nats-server']}"
        if "nats-server" in pids
        else "external server"
    )
    logs = list(cluster.log_paths().values())
    lines = [
        "",
        f"NATS         {url} ({server})",
        f"state dir    {state}",
    ]
    if cluster.store_dir is not None:
        lines.append(f"JetStream    {cluster.store_dir}")
    lines.append(f"logs         {logs[0]}")
    lines += [f"             {path}" for path in logs[1:]]
    lines += [
        f"coordinator  pid {pids.get('coordinator')}, policy {cluster.policy}, "
        f"prefix {cluster.prefix}",
        _dashboard_line(cluster, pids),
        "",
        agents_table(cluster),
        "",
        *_usage(cluster, url),
    ]
    return "\n".join(lines)


def _dashboard_line(cluster: LocalCluster, pids: dict[str, int]) -> str:
    from taskiq_fleet.dashboard.cli import missing

    if cluster.dashboard_url is not None:
        return f"dashboard    {cluster.dashboard_url} (pid {pids.get('dashboard')})"
    why = missing()
    return f"dashboard    not started ({why})" if why else "dashboard    not started"


def _usage(cluster: LocalCluster, url: str) -> list[str]:
    nats = f"--nats {url}" + (f" --prefix {cluster.prefix}" if cluster.prefix != "fleet" else "")
    if any(a.app == DEFAULT_APP for a in cluster.agents):
        submit = f"fleet submit {DEMO_DAG} {nats} --input 'numbers=[3,1,4,1,5]'"
    else:
        submit = f"fleet submit MODULE:DAG {nats} --input NAME=JSON"
    return [
        f"submit       {submit}",
        f"python       await CoordinatorClient.connect({url!r}"
        + (f", prefix={cluster.prefix!r})" if cluster.prefix != "fleet" else ")"),
        f"watch        fleet workers {nats}",
        f"             fleet runs {nats}",
        f"             fleet status RUN {nats}",
        f"stop         Ctrl-C, or kill -TERM {os.getpid()}",
    ]
