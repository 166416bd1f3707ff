"""`spanwatch rebuild`: rebuild the spans of every session, or of the named ones, once."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import structlog
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from spanwatch.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PROBLEMS,
    add_db_option,
    add_json_option,
    fail,
    print_json,
    subcommand,
)
from spanwatch.store.errors import StoreError
from spanwatch.store.problems import log_problems
from spanwatch.store.rebuild import SessionResult
from spanwatch.store.rebuild_all import rebuild_store

EXAMPLE = """\
examples:
  spanwatch rebuild --db ~/.local/share/agent/events.db
  spanwatch rebuild --db events.db --session 3f2a9c --session 77b0e1 --json

  spanwatch rebuild --db events.db --jobs 1     # no worker processes

exit codes: 0 done, 1 done but some rows were skipped (see the log), 2 usage or store error
"""


#: Beyond this many workers the one writing process is the limit.
MAX_DEFAULT_JOBS = 4


def add_parser(subparsers: Any) -> None:
    parser = subcommand(
        subparsers,
        "rebuild",
        help="rebuild tool spans once (all sessions or --session)",
        doc=__doc__,
        example=EXAMPLE,
    )
    add_db_option(parser)
    parser.add_argument(
        "--session",
        action="append",
        metavar="ID",
        help="rebuild only this session (repeatable); default: every session",
    )
    parser.add_argument(
        "--jobs",
        type=_jobs,
        default=default_jobs(),
        metavar="N",
        help="worker processes that read and build sessions while one process writes "
        "(default: one per CPU, here %(default)s; 1: no workers)",
    )
    add_json_option(parser)
    parser.set_defaults(handler=run)


def default_jobs() -> int:
    return min(os.cpu_count() or 1, MAX_DEFAULT_JOBS)


def _jobs(text: str) -> int:
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return jobs


def run(args: argparse.Namespace) -> int:
    log = structlog.get_logger("spanwatch.rebuild")
    show_progress = not args.json and sys.stderr.isatty()
    progress: AbstractContextManager[Any] = (
        Progress(
            TextColumn("rebuilding"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("sessions"),
            TimeRemainingColumn(),
            transient=True,
        )
        if show_progress
        else nullcontext()
    )
    try:
        with progress as bar:
            on_session = _reporter(log, bar)
            summary = rebuild_store(args.db, args.session, on_session=on_session, jobs=args.jobs)
    except StoreError as exc:
        return fail(str(exc))
    for row_id, seq in summary.unreadable_rows:
        log.warning("row skipped", session_id=None, seq=seq, row_id=row_id,
                    reason="session_id is not readable TEXT")  # fmt: skip
    figures = {
        "sessions": summary.sessions,
        "events": summary.events,
        "spans": summary.spans,
        "spans_written": summary.spans_written,
        "spans_deleted": summary.spans_deleted,
        "sessions_removed": summary.vanished,
        "skipped_rows": summary.skipped_rows,
        "seconds": round(summary.seconds, 3),
    }
    if args.json:
        print_json(figures)
    else:
        print(
            f"rebuilt {summary.sessions} sessions: {summary.events} events, {summary.spans} spans "
            f"({summary.spans_written} written, {summary.spans_deleted} deleted), "
            f"{summary.skipped_rows} rows skipped, in {summary.seconds:.2f} s"
        )
    return EXIT_PROBLEMS if summary.skipped_rows else EXIT_OK


def _reporter(log: Any, bar: Progress | None) -> Callable[[SessionResult, int, int], None]:
    task = bar.add_task("rebuild", total=None) if bar is not None else None

    def on_session(result: SessionResult, done: int, total: int) -> None:
        log_problems(log, result)
        if bar is not None and task is not None:
            bar.update(task, completed=done, total=total)

    return on_session


__all__ = ["EXIT_ERROR", "add_parser", "run"]
