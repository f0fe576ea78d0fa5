"""structlog setup: one format for fleet and library logs, level filtering, idempotence."""

from __future__ import annotations

import argparse
import io
import json
import logging
from datetime import datetime
from typing import Any

import pytest

from shared.logging import add_logging_arguments, configure_logging, get_logger

pytestmark = pytest.mark.usefixtures("restore_logging")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_from_structlog_and_stdlib() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)

    get_logger("fleet.agent").info("worker_registered", worker="w1", slots=4)
    logging.getLogger("nats.aio.client").warning("lost connection to %s", "nats://a:4222")

    fleet, library = json_lines(stream)
    assert fleet["event"] == "worker_registered"
    assert (fleet["worker"], fleet["slots"]) == ("w1", 4)
    assert (fleet["level"], fleet["logger"]) == ("info", "fleet.agent")
    assert library["event"] == "lost connection to nats://a:4222"
    assert (library["level"], library["logger"]) == ("warning", "nats.aio.client")
    for record in (fleet, library):
        stamp = datetime.fromisoformat(record["timestamp"])
        assert stamp.utcoffset() is not None


def test_level_filtering_applies_to_both() -> None:
    stream = io.StringIO()
    configure_logging("warning", "json", stream=stream)

    get_logger("fleet").info("dropped")
    get_logger("fleet").debug("dropped")
    logging.getLogger("taskiq").info("dropped")
    get_logger("fleet").warning("kept")
    logging.getLogger("taskiq").error("kept too")

    assert [r["event"] for r in json_lines(stream)] == ["kept", "kept too"]


def test_debug_level_lets_debug_through() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream=stream)

    get_logger("fleet").debug("detail")

    assert [r["event"] for r in json_lines(stream)] == ["detail"]


def test_configuring_twice_does_not_duplicate_output() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", stream=first)
    configure_logging("info", "json", stream=second)

    get_logger("fleet").info("once")
    logging.getLogger("nats").info("once too")

    assert first.getvalue() == ""
    assert [r["event"] for r in json_lines(second)] == ["once", "once too"]


def test_reconfigure_keeps_handlers_others_installed() -> None:
    theirs = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(theirs)

    configure_logging("info", "json", stream=io.StringIO())
    configure_logging("info", "json", stream=io.StringIO())

    assert theirs in logging.getLogger().handlers


def test_logger_created_before_configuration_follows_it() -> None:
    early = get_logger("fleet.early")
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)

    early.info("after_configure")

    assert [r["event"] for r in json_lines(stream)] == ["after_configure"]


def test_auto_is_json_when_not_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)

    get_logger("fleet").info("piped")

    assert json_lines(stream)[0]["event"] == "piped"


def test_auto_is_console_on_a_terminal() -> None:
    stream = FakeTerminal()
    configure_logging(stream=stream)

    get_logger("fleet").info("interactive", worker="w1")

    output = stream.getvalue()
    assert "interactive" in output
    assert "w1" in output
    with pytest.raises(json.JSONDecodeError):
        json.loads(output.splitlines()[0])


def test_explicit_console_without_terminal_has_no_colour_codes() -> None:
    stream = io.StringIO()
    configure_logging("info", "console", stream=stream)

    get_logger("fleet").info("plain")

    assert "plain" in stream.getvalue()
    assert "\x1b[" not in stream.getvalue()


def test_exceptions_are_structured_in_json() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("fleet").exception("failed")

    (record,) = json_lines(stream)
    assert record["event"] == "failed"
    assert "boom" in json.dumps(record["exception"])


def test_logs_go_to_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")

    get_logger("fleet").info("to_stderr")

    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err.splitlines()[-1])["event"] == "to_stderr"


@pytest.mark.parametrize(("level", "fmt"), [("verbose", "json"), ("info", "yaml")])
def test_rejects_unknown_level_or_format(level: str, fmt: Any) -> None:
    with pytest.raises(ValueError, match="unknown log"):
        configure_logging(level, fmt, stream=io.StringIO())


def parse(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fleet")
    add_logging_arguments(parser, environ=env)
    return parser.parse_args(argv)


def test_logging_arguments_defaults_environment_and_flags() -> None:
    assert vars(parse([], {})) == {"log_level": "info", "log_format": "auto"}
    from_env = parse([], {"FLEET_LOG_LEVEL": "DEBUG", "FLEET_LOG_FORMAT": "json"})
    assert vars(from_env) == {"log_level": "debug", "log_format": "json"}
    flags = parse(
        ["--log-level", "error", "--log-format", "console"],
        {"FLEET_LOG_LEVEL": "debug", "FLEET_LOG_FORMAT": "json"},
    )
    assert vars(flags) == {"log_level": "error", "log_format": "console"}


@pytest.mark.parametrize(
    ("argv", "env", "mentions"),
    [
        (["--log-level", "loud"], {}, "'loud'"),
        ([], {"FLEET_LOG_LEVEL": "loud"}, "FLEET_LOG_LEVEL"),
        ([], {"FLEET_LOG_FORMAT": "xml"}, "FLEET_LOG_FORMAT"),
    ],
)
def test_logging_arguments_reject_bad_values(
    capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str], mentions: str
) -> None:
    with pytest.raises(SystemExit):
        parse(argv, env)

    assert mentions in capsys.readouterr().err


def test_help_names_the_environment_variables() -> None:
    parser = argparse.ArgumentParser(prog="fleet")
    add_logging_arguments(parser, environ={})

    help_text = parser.format_help()

    assert "FLEET_LOG_LEVEL" in help_text
    assert "FLEET_LOG_FORMAT" in help_text
