"""Loading the user's taskiq broker from ``module:attribute``, as ``taskiq worker`` does,
and starting it as an agent needs it.

Every way loading can go wrong gets its own message, because it is the first
thing an operator types on a new host and a bare traceback helps nobody.

To an agent the app's broker is a registry of tasks with their middlewares, result
backend and start-up events, never a transport: assignments arrive from the
coordinator over the agent's own connection to the fleet. So any taskiq broker will
do, the project's ``FleetBroker`` or an app's taskiq-nats ``NatsBroker`` or
``PullBasedJetStreamBroker`` unchanged, and only taskiq's side of it is started
(``start_app``).
"""

from __future__ import annotations

from pathlib import Path

from taskiq import AsyncBroker

from shared.cliargs import import_object


class AppError(ValueError):
    """The APP argument does not name a usable taskiq broker."""


def load_broker(spec: str, *, search_path: Path | None = None) -> AsyncBroker:
    """Import ``module:attribute`` and check that it is a taskiq ``AsyncBroker``.

    The current directory (or ``search_path``) goes first on ``sys.path``, so
    ``fleet agent tasks:broker`` works from a project checkout like
    ``taskiq worker tasks:broker`` does.
    """
    try:
        target = import_object(
            spec, form="APP must look like 'module:broker'", search_path=search_path
        )
    except ValueError as exc:
        raise AppError(str(exc)) from exc
    if not isinstance(target, AsyncBroker):
        raise AppError(f"{spec!r} is a {type(target).__name__}, not a taskiq broker (AsyncBroker)")
    return target


async def start_app(broker: AsyncBroker) -> None:
    """What ``taskiq worker`` starts for the tasks (the worker start-up events, the
    middlewares, the result backend), and not the broker class's own ``startup``.

    That override starts the transport the agent never uses, with side effects it must not
    have: taskiq-nats's ``NatsBroker`` connects to the servers the app names, which the
    agent's host may not reach or have credentials for; ``PullBasedJetStreamBroker``
    creates its stream and consumer; a push-based broker binds its consumer and takes
    messages meant for the app's remaining ``taskiq worker`` processes.
    """
    broker.is_worker_process = True
    await AsyncBroker.startup(broker)


async def stop_app(broker: AsyncBroker) -> None:
    """The end of ``start_app``: taskiq's shutdown, not the transport's."""
    await AsyncBroker.shutdown(broker)
