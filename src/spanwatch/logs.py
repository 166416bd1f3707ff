"""Structured logs: one event per line, JSON off a TTY, coloured text on one.

`configure_logging` can be called again at any time (the daemon does on
SIGHUP). Loggers bound before the call follow it too: the level gate and the
output are shared objects that the call updates in place, because structlog
loggers keep the processors and the file they were created with, and a daemon
holds bound loggers for its whole life.

Records of the standard `logging` module (watchfiles, asyncio) are passed
through the same pipeline, so a journald or file reader sees one format.

Every event carries `event`, `level` and `timestamp` (ISO 8601, UTC).
Tracebacks never include local variables: they could hold event payloads.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMATS = ("auto", "json", "console")
_FIRST_KEYS = ("timestamp", "level", "event")

# structlog method names -> numeric level; `exception` logs at error.
_METHOD_LEVELS = {
    **LEVELS,
    "warn": logging.WARNING,
    "exception": logging.ERROR,
    "fatal": logging.CRITICAL,
}


class _LevelGate:
    """Drops events below the current level; shared by every logger, so a reload applies to all."""

    def __init__(self) -> None:
        self.level = logging.INFO

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        if _METHOD_LEVELS.get(method_name, logging.INFO) < self.level:
            raise structlog.DropEvent
        return event_dict


class _Output:
    """Renders an event and writes it as one line; swapped in place by `configure_logging`."""

    def __init__(self) -> None:
        self.stream: TextIO | None = None  # None: whatever sys.stderr is when writing
        self.render: Processor = structlog.processors.JSONRenderer()
        self._lock = threading.Lock()

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        return str(self.render(logger, method_name, event_dict))

    def write(self, line: str) -> None:
        # One write per event, under a lock, so lines of two threads never interleave.
        stream = sys.stderr if self.stream is None else self.stream
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):
                # The reader went away (a closed pipe, a closed file). Losing log
                # lines is bad; a daemon that stops working because nobody reads
                # its log, or that ignores SIGTERM because a log write failed, is worse.
                pass


class _OutputLogger:
    """The wrapped logger structlog calls with the rendered line, whatever the level."""

    def msg(self, message: str) -> None:
        _OUTPUT.write(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _StdlibBridge(logging.Handler):
    """Sends records of the `logging` module through structlog's pipeline."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            level = min(max(record.levelno // 10 * 10, logging.DEBUG), logging.CRITICAL)
            _BRIDGE_LOGGER.log(level, record.getMessage(), **fields)
        except Exception:
            self.handleError(record)


_GATE = _LevelGate()
_OUTPUT = _Output()
_BRIDGE = _StdlibBridge()
_BRIDGE_LOGGER = structlog.get_logger("logging")


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send logs of `level` and above to `stream` (default: stderr) in format `fmt`.

    `fmt`: "json" (one JSON object per line), "console" (aligned text,
    coloured only on a TTY) or "auto" (console on a TTY, JSON otherwise, e.g.
    under journald or redirected to a file). Raises ValueError for an unknown
    level or format. Safe to call again; the latest call wins for all loggers.
    """
    level_number = LEVELS.get(level.lower())
    if level_number is None:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")
    on_tty = _is_tty(sys.stderr if stream is None else stream)

    _GATE.level = level_number
    _OUTPUT.stream = stream
    use_console = fmt == "console" or (fmt == "auto" and on_tty)
    _OUTPUT.render = _console_renderer(colors=on_tty) if use_console else _json_renderer()

    structlog.configure(
        processors=[
            _GATE,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            _OUTPUT,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        logger_factory=lambda *args: _OutputLogger(),
        context_class=dict,
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(level_number)


def reset_logging() -> None:
    """Undo `configure_logging`: structlog's defaults, no bridge from `logging`. For tests."""
    structlog.reset_defaults()
    logging.getLogger().removeHandler(_BRIDGE)
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("watchfiles").setLevel(logging.NOTSET)


def _json_renderer() -> Processor:
    format_exc_info = structlog.processors.format_exc_info
    render_json = structlog.processors.JSONRenderer(sort_keys=False)

    def render(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str | bytes:
        fields = format_exc_info(logger, method_name, event_dict)
        # Standard keys first, so a person reading the raw lines finds them in one place.
        ordered = {key: fields.pop(key) for key in _FIRST_KEYS if key in fields}
        ordered.update(fields)
        return render_json(logger, method_name, ordered)

    return render


def _console_renderer(colors: bool) -> Processor:
    colors = colors and "NO_COLOR" not in os.environ
    return structlog.dev.ConsoleRenderer(
        colors=colors,
        exception_formatter=(
            structlog.dev.RichTracebackFormatter(show_locals=False)
            if colors
            else structlog.dev.plain_traceback
        ),
    )


def _route_stdlib_logging(level: int) -> None:
    root = logging.getLogger()
    if _BRIDGE not in root.handlers:
        root.addHandler(_BRIDGE)
    root.setLevel(level)
    # watchfiles reports every batch of changes at INFO; that is a debug detail here.
    logging.getLogger("watchfiles").setLevel(max(level, logging.WARNING))


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
