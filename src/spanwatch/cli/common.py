"""Pieces every subcommand uses: the --db option, exit codes, JSON output."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

#: Exit codes scripts can rely on.
EXIT_OK = 0
EXIT_PROBLEMS = 1  # the work was done, but something needs a look (skipped rows, diffs)
EXIT_ERROR = 2  # usage or store error: nothing useful was done


def subcommand(subparsers: Any, name: str, *, help: str, doc: str | None, example: str) -> Any:
    """A subcommand parser with the shared logging options and an example in its help."""
    return subparsers.add_parser(
        name,
        help=help,
        description=doc,
        epilog=example,
        parents=[logging_options()],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def logging_options() -> argparse.ArgumentParser:
    """Options every subcommand takes, after its name: `spanwatch run --log-level debug`."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("logging")
    group.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (logs go to stderr)",
    )
    group.add_argument(
        "--log-format",
        default=None,
        choices=["auto", "json", "console"],
        help="auto: coloured console on a terminal, JSON lines otherwise",
    )
    return parser


def add_db_option(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "--db",
        type=Path,
        required=required,
        metavar="PATH",
        help="the agent's SQLite event store (the file holding the `events` table)",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def print_json(value: Any) -> None:
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2, default=_json_default)
    sys.stdout.write(text.decode() + "\n")


def _json_default(value: object) -> str:
    """A stored value JSON has no type for: a BLOB, or TEXT that is not UTF-8 (as SQL writes it)."""
    if isinstance(value, bytes):
        return f"x'{value.hex()}'"
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def fail(message: str) -> int:
    """A one-line error on stderr, no traceback."""
    sys.stderr.write(f"spanwatch: error: {message}\n")
    return EXIT_ERROR
