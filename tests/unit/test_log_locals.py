"""Exception logs keep the traceback but not the frames' local variables, where a failed
task's arguments live (issue 17, item 4)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from shared.logging import LogFormat, configure_logging, get_logger

pytestmark = pytest.mark.usefixtures("restore_logging")

SECRET = "hunter2-s3cret-token"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def charge_card(card_number: str) -> None:
    last_digits = card_number[-4:]
    raise ValueError("card declined by the bank" + " " * len(last_digits))


def log_failure(logger: str) -> None:
    try:
        charge_card(SECRET)
    except ValueError:
        if logger == "structlog":
            get_logger("fleet.agent").exception("attempt failed", run="r1")
        else:
            logging.getLogger("taskiq.receiver").exception("task failed")


STREAMS = [("json", io.StringIO), ("console", io.StringIO), ("console", FakeTerminal)]


@pytest.mark.parametrize("logger", ["structlog", "stdlib"])
@pytest.mark.parametrize(("fmt", "stream_type"), STREAMS, ids=["json", "console", "terminal"])
def test_exception_logs_leave_out_local_variables(
    logger: str, fmt: LogFormat, stream_type: type[io.StringIO]
) -> None:
    stream = stream_type()
    configure_logging("info", fmt, stream=stream)

    log_failure(logger)

    written = stream.getvalue()
    assert "card declined by the bank" in written
    assert "charge_card" in written  # the frames are there
    assert SECRET not in written


def test_json_exception_frames_have_no_locals_key() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)

    log_failure("structlog")

    (record,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    frames = record["exception"][0]["frames"]
    assert [f["name"] for f in frames][-1] == "charge_card"
    assert all("locals" not in frame or not frame["locals"] for frame in frames)


def test_locals_can_be_asked_for() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream, show_locals=True)

    log_failure("structlog")

    assert SECRET in stream.getvalue()
