"""`spanwatch`: the entry point. Each subcommand lives in a module of its own."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence

from spanwatch import __version__
from spanwatch.cli import demo, rebuild, run, status, tree, triggers, verify
from spanwatch.cli.common import EXIT_ERROR, fail
from spanwatch.logs import configure_logging
from spanwatch.store.errors import advice

COMMANDS = (run, rebuild, status, verify, tree, demo, triggers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spanwatch",
        description="Keeps the tool_spans table of an AI-coding-agent event store right and fresh.",
        epilog="Run `spanwatch COMMAND --help` for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"spanwatch {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level or "info", args.log_format or "auto")
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except sqlite3.Error as exc:  # the store failed mid-way: damaged, full, locked...
        where = f"{args.db}: " if getattr(args, "db", None) else ""
        return fail(f"{where}{exc} ({advice(exc)})")
    return code


def entry() -> None:
    sys.exit(main())


__all__ = ["EXIT_ERROR", "build_parser", "entry", "main"]
