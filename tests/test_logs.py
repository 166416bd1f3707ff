"""Logs: one JSON object per line off a TTY, console text on one, levels that reload."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import structlog

from spanwatch.logs import configure_logging, reset_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    yield
    structlog.contextvars.clear_contextvars()
    reset_logging()


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_are_json_with_the_standard_keys() -> None:
    stream = io.StringIO()
    configure_logging("info", "auto", stream)  # a StringIO is not a TTY: JSON
    log = structlog.get_logger("spanwatch.test")
    log.info("batch written", sessions=3, spans=12, ms=4.5)
    log.warning("row skipped", session_id="s1", seq=7)

    first, second = json_lines(stream)
    assert first["event"] == "batch written"
    assert first["level"] == "info"
    assert (first["sessions"], first["spans"], first["ms"]) == (3, 12, 4.5)
    assert second["level"] == "warning"
    assert second["session_id"] == "s1"
    assert list(first)[:3] == ["timestamp", "level", "event"]
    for line in (first, second):
        stamp = datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00"))
        assert stamp.utcoffset() == timedelta(0)


def test_events_below_the_level_are_dropped() -> None:
    stream = io.StringIO()
    configure_logging("warning", "json", stream)
    log = structlog.get_logger()
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [line["event"] for line in json_lines(stream)] == ["w", "e"]


def test_level_change_applies_to_loggers_bound_before_it() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    bound = structlog.get_logger().bind(session_id="s1")
    bound.debug("hidden")
    configure_logging("debug", "json", stream)  # what a SIGHUP reload does
    bound.debug("shown")
    configure_logging("error", "json", stream)
    bound.warning("hidden again")
    bound.error("still shown")
    lines = json_lines(stream)
    assert [line["event"] for line in lines] == ["shown", "still shown"]
    assert all(line["session_id"] == "s1" for line in lines)


def test_one_line_per_event_even_with_newlines_and_tracebacks() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    log = structlog.get_logger()
    log.info("two\nlines", note="a\nb")
    secret = "payload text that must not appear"
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("rebuild failed", session_id="s2")
    assert secret  # a local variable of this frame
    first, second = json_lines(stream)
    assert first["event"] == "two\nlines"
    assert second["level"] == "error"
    assert "RuntimeError: boom" in str(second["exception"])
    assert secret not in stream.getvalue()


def test_context_variables_are_included() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    structlog.contextvars.bind_contextvars(session_id="s9")
    structlog.get_logger().info("rebuilt")
    assert json_lines(stream)[0]["session_id"] == "s9"


def test_standard_logging_goes_through_the_same_pipeline() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    logging.getLogger("some.library").warning("disk %s", "slow")
    logging.getLogger("some.library").debug("not at info")
    logging.getLogger("watchfiles.main").info("1 change detected")  # noisy at info: muted
    (line,) = json_lines(stream)
    assert line["event"] == "disk slow"
    assert line["level"] == "warning"
    assert line["logger"] == "some.library"


def test_console_format_on_a_terminal_is_coloured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    master, replica = os.openpty()
    try:
        with os.fdopen(replica, "w", closefd=False) as terminal:
            configure_logging("info", "auto", terminal)
            structlog.get_logger().info("ready", sessions=2)
        output = os.read(master, 65536).decode()
    finally:
        os.close(master)
        os.close(replica)
    assert "ready" in output
    assert "sessions" in output
    assert "\x1b[" in output  # ANSI colour codes
    assert not output.lstrip().startswith("{")


def test_console_format_off_a_terminal_has_no_colour() -> None:
    stream = io.StringIO()
    configure_logging("info", "console", stream)
    structlog.get_logger().info("ready", sessions=2)
    text = stream.getvalue()
    assert "ready" in text
    assert "sessions=2" in text
    assert "\x1b[" not in text
    assert text.count("\n") == 1


def test_unknown_level_or_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging("verbose", "json", io.StringIO())
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml", io.StringIO())
