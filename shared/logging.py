"""One log format for fleet's own events and for the libraries it drives.

structlog and the stdlib ``logging`` module both end in the same handler on the root
logger, so a nats-py reconnect warning and an agent's placement event land in one
stream, in one format, ordered as they happened. JSON lines are the default whenever
stderr is not a terminal because that is how agents run in production (systemd,
containers), where logs are shipped and queried; a person at a terminal gets the
readable console renderer instead.

Exception logs carry the traceback but never the frames' local variables: structlog's
renderers show them by default, and the frames of a failed task hold its arguments
(credentials, personal data), which would land in shipped logs. ``show_locals=True``
brings them back where that is wanted (a developer's machine).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TextIO, get_args

import structlog
from structlog.dev import RichTracebackFormatter, plain_traceback
from structlog.processors import ExceptionRenderer
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import ExceptionRenderer as FormatException
from structlog.typing import Processor

__all__ = [
    "DROP_LOG_EVERY",
    "LOG_FORMAT_ENV",
    "LOG_LEVEL_ENV",
    "DropLog",
    "LogFormat",
    "add_logging_arguments",
    "configure_logging",
    "get_logger",
    "info_enabled",
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
    show_locals: bool = False,
) -> None:
    """Route structlog and stdlib logging to ``stream`` (stderr) in one format.

    Safe to call again, e.g. once with defaults at import and once after parsing
    arguments: the previous fleet handler is replaced rather than duplicated.
    ``show_locals``: put the frames' local variables in exception logs (module docstring).
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
        [
            structlog.dev.ConsoleRenderer(
                colors=is_tty, exception_formatter=_console_traceback(is_tty, show_locals)
            )
        ]
        if console
        else [
            ExceptionRenderer(ExceptionDictTransformer(show_locals=show_locals)),
            structlog.processors.JSONRenderer(),
        ]
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


def _console_traceback(colors: bool, show_locals: bool) -> FormatException:
    """rich's traceback on a colour terminal, the plain one elsewhere; locals only if asked."""
    if colors:
        return RichTracebackFormatter(show_locals=show_locals)
    if show_locals:
        return RichTracebackFormatter(color_system=None, show_locals=True)
    return plain_traceback


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)


def info_enabled(name: str) -> bool:
    """Whether logger ``name`` writes info lines. Ask before an info line logged once per
    task: a dropped structlog call still costs ~10 us (the lazy logger is bound anew on
    every call, so that tests can capture logs), 4% of the coordinator in a burst."""
    return logging.getLogger(name).isEnabledFor(logging.INFO)


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


DROP_LOG_EVERY = 1.0
"""Seconds between two lines of a ``DropLog`` for one kind of input."""


@dataclass
class _Kind:
    count: int = 0
    """Drops since the last line."""
    last: float = float("-inf")
    """When the last line was written."""
    fields: dict[str, Any] | None = None
    """The latest drop's fields, written with the next line."""
    flushing: bool = False


class DropLog:
    """Counted, sampled log lines for dropped input: a flood of junk costs at most one line
    per ``every`` seconds per kind (the subject kind it came on), never a traceback.

    The first drop of a kind is written at once; later ones within ``every`` are counted,
    and one line with their count (``dropped``) and the latest one's fields follows when
    the interval is up (scheduled on the running event loop, so a burst that stops is
    still reported). ``total`` counts every drop.
    """

    def __init__(
        self,
        logger: Any,
        event: str,
        *,
        every: float = DROP_LOG_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._event = event
        self._every = every
        self._clock = clock
        self._kinds: dict[str, _Kind] = {}
        self.total = 0

    def drop(self, kind: str, **fields: Any) -> None:
        self.total += 1
        entry = self._kinds.setdefault(kind, _Kind())
        entry.count += 1
        entry.fields = fields
        wait = entry.last + self._every - self._clock()
        if wait <= 0:
            self._write(kind, entry)
        elif not entry.flushing:
            self._later(kind, entry, wait)

    def flush(self) -> None:
        """Write every count not written yet (on stop, or in tests)."""
        for kind, entry in self._kinds.items():
            if entry.count:
                self._write(kind, entry)

    def _later(self, kind: str, entry: _Kind, wait: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the next drop after the interval writes the count
            return
        entry.flushing = True
        loop.call_later(wait, self._due, kind, entry)

    def _due(self, kind: str, entry: _Kind) -> None:
        entry.flushing = False
        if entry.count:
            self._write(kind, entry)

    def _write(self, kind: str, entry: _Kind) -> None:
        self._log.warning(self._event, source=kind, dropped=entry.count, **(entry.fields or {}))
        entry.count, entry.last, entry.fields = 0, self._clock(), None
