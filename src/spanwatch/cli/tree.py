"""`spanwatch tree`: one session's tool spans as an indented tree. Writes nothing.

It shows what is stored in `tool_spans` and `tool_span_paths`, not a fresh
rebuild: a tree that looks wrong is a reason to run `spanwatch verify`.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from typing import Any

from rich.console import Console

from spanwatch.cli.common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    add_db_option,
    add_json_option,
    fail,
    print_json,
    subcommand,
)
from spanwatch.cli.render_tree import SessionTree, SpanView, build_tree, render_tree, tree_json
from spanwatch.store.connection import has_table, open_store, read_snapshot
from spanwatch.store.errors import StoreError

EXAMPLE = """\
examples:
  spanwatch tree --db events.db 9f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f
  spanwatch tree --db events.db 9f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f --json | jq '.roots[0]'

Each line: tool, status (an orphaned span lacks a start or an end: a tool
that was interrupted or is still running), duration (and the lead time when it
differs), tokens in and out, cost in USD, the subtree's tokens and cost for
spans with children, and the files touched (relative to the directory named on
the first line). `spanwatch status --db PATH --sessions` lists the sessions.
exit codes: 0 shown, 1 no such session, 2 usage or store error
"""

#: Output width when stdout is not a terminal and $COLUMNS is not set.
PIPE_WIDTH = 200

#: The tool_spans columns the tree shows: SpanView's fields but its paths.
_SPAN_COLUMNS = tuple(name for name in SpanView.__dataclass_fields__ if name != "paths")
_SPAN_SQL = f"SELECT {', '.join(_SPAN_COLUMNS)} FROM tool_spans WHERE session_id = ?"
_PATH_SQL = (
    "SELECT p.span_id, p.path FROM tool_span_paths AS p "
    "JOIN tool_spans AS s ON s.span_id = p.span_id WHERE s.session_id = ? ORDER BY p.path"
)


def add_parser(subparsers: Any) -> None:
    parser = subcommand(
        subparsers, "tree", help="show a session's span tree (durations, tokens, cost, files)",
        doc=__doc__, example=EXAMPLE,
    )  # fmt: skip
    add_db_option(parser)
    parser.add_argument("session", metavar="SESSION", help="the session id")
    add_json_option(parser)
    parser.set_defaults(handler=run)


def read_session_spans(conn: sqlite3.Connection, session_id: str) -> list[SpanView] | None:
    """The session's stored spans with their paths; None if the store has no such session.

    A session with events but no spans yet (the daemon has not rebuilt it, or
    it has no tool use) gives an empty list. One read snapshot, so a daemon
    writing meanwhile cannot mix two versions of the session.
    """
    with read_snapshot(conn):
        rows: list[tuple[Any, ...]] = []
        paths: dict[str, list[str]] = {}
        if has_table(conn, "tool_spans"):
            rows = conn.execute(_SPAN_SQL, (session_id,)).fetchall()
            if rows and has_table(conn, "tool_span_paths"):
                for span_id, path in conn.execute(_PATH_SQL, (session_id,)):
                    paths.setdefault(span_id, []).append(path)
        if not rows:
            known = conn.execute(
                "SELECT 1 FROM events WHERE session_id = ? LIMIT 1", (session_id,)
            ).fetchone()
            if known is None:
                return None
    return [
        SpanView(**dict(zip(_SPAN_COLUMNS, row, strict=True)), paths=tuple(paths.get(row[0], ())))
        for row in rows
    ]


def read_session_tree(conn: sqlite3.Connection, session_id: str) -> SessionTree | None:
    spans = read_session_spans(conn, session_id)
    return None if spans is None else build_tree(session_id, spans)


def output_console() -> Console:
    """A console for trees: the terminal's width; off one, $COLUMNS or wide enough not to wrap.

    Rich assumes 80 columns when stdout is a pipe or a file, which wraps most
    span lines; a log or a pager shows long lines better than wrapped ones.
    """
    console = Console(highlight=False)
    if not console.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        console.width = PIPE_WIDTH
    return console


def run(args: argparse.Namespace) -> int:
    try:
        conn = open_store(args.db, readonly=True)
        try:
            tree = read_session_tree(conn, args.session)
        finally:
            conn.close()
    except (StoreError, sqlite3.Error) as exc:
        return fail(str(exc))
    if tree is None:
        sys.stderr.write(
            f"spanwatch: no session {args.session} in {args.db} "
            f"(`spanwatch status --db {args.db} --sessions` lists them)\n"
        )
        return EXIT_PROBLEMS
    if args.json:
        print_json({"db": str(args.db), **tree_json(tree)})
    else:
        output_console().print(render_tree(tree))
    return EXIT_OK
