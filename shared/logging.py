"""One log format for fleet's own events and for the libraries it drives.

structlog and the stdlib ``logging`` module both end in the same handler on the root
logger, so a nats-py reconnect warning and an agent's placement event land in one
stream, in one format, ordered as they happened. JSON lines are the default whenever
stderr is not a terminal because that is how agents run in production (systemd,
containers), where logs are shipped and queried; a person at a terminal gets the
readable console renderer instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Literal, TextIO, get_args

import structlog
from structlog.typing import Processor

__all__ = [
    "LOG_FORMAT_ENV",
    "LOG_LEVEL_ENV",
    "LogFormat",
    "add_logging_arguments",
    "configure_logging",
    "get_logger",
]

LogFormat = Literal["auto", "json", "console"]

LOG_LEVEL_ENV = "FLEET_LOG_LEVEL"
LOG_FORMAT_ENV = "FLEET_LOG_FORMAT"

_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_FORMATS: tuple[str, ...] = get_args(LogFormat)


class _FleetHandler(logging.StreamHandler[TextIO]):
    """Marks the handler this module installed, so reconfiguring replaces only it and
    leaves handlers that others (pytest's caplog, an embedding application) added."""


def _level_number(level: str) -> int:
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {level!r}: expected one of {', '.join(_LEVELS)}"
        ) from None


def configure_logging(
    level: str = "info",
    fmt: LogFormat = "auto",
    *,
    stream: TextIO | None = None,
) -> None:
    """Route structlog and stdlib logging to ``stream`` (stderr) in one format.

    Safe to call again, e.g. once with defaults at import and once after parsing
    arguments: the previous fleet handler is replaced rather than duplicated.
    """
    threshold = _level_number(level)
    if fmt not in _FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: expected one of {', '.join(_FORMATS)}")
    out = sys.stderr if stream is None else stream
    is_tty = out.isatty()
    console = fmt == "console" or (fmt == "auto" and is_tty)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: list[Processor] = (
        [structlog.dev.ConsoleRenderer(colors=is_tty)]
        if console
        else [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )
    handler = _FleetHandler(out)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _FleetHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(threshold)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # A logger created at import time, before configure_logging ran, would otherwise
        # keep structlog's default print-to-stdout pipeline forever.
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)


def _choice(env: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        normal = value.strip().lower()
        if normal not in choices:
            raise argparse.ArgumentTypeError(
                f"{value!r} (from the flag or {env}) is not one of {', '.join(choices)}"
            )
        return normal

    return parse


def add_logging_arguments(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> None:
    """Add ``--log-level``/``--log-format``; their defaults come from the environment.

    A bad environment value is reported by argparse when the arguments are parsed, the
    same way as a bad flag, rather than being silently replaced by the default.
    """
    env = os.environ if environ is None else environ
    group = parser.add_argument_group("logging")
    group.add_argument(
        "--log-level",
        default=env.get(LOG_LEVEL_ENV) or "info",
        type=_choice(LOG_LEVEL_ENV, tuple(_LEVELS)),
        metavar="{" + ",".join(_LEVELS) + "}",
        help=f"least severe level to log (env {LOG_LEVEL_ENV}; default info)",
    )
    group.add_argument(
        "--log-format",
        default=env.get(LOG_FORMAT_ENV) or "auto",
        type=_choice(LOG_FORMAT_ENV, _FORMATS),
        metavar="{" + ",".join(_FORMATS) + "}",
        help=(
            "auto: readable when stderr is a terminal, JSON lines otherwise "
            f"(env {LOG_FORMAT_ENV}; default auto)"
        ),
    )
