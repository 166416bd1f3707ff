"""`spanwatch verify`: compare stored spans with a fresh rebuild in memory. Writes nothing."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from spanwatch.cli.common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    add_db_option,
    add_json_option,
    fail,
    print_json,
    subcommand,
)
from spanwatch.store.connection import has_table, open_store
from spanwatch.store.errors import StoreError
from spanwatch.store.schema import events_shape
from spanwatch.store.verify import SessionCheck, check_store

EXAMPLE = """\
examples:
  spanwatch verify --db events.db
  spanwatch verify --db events.db --session 3f2a9c --json

A session whose watermark is behind its events is "pending": the daemon has not
rebuilt it yet. Every other difference is a real one.
exit codes: 0 stored spans match, 1 differences found, 2 usage or store error
"""


def add_parser(subparsers: Any) -> None:
    parser = subcommand(
        subparsers, "verify", help="check stored spans against a rebuild", doc=__doc__,
        example=EXAMPLE,
    )  # fmt: skip
    add_db_option(parser)
    parser.add_argument("--session", action="append", metavar="ID", help="check only this one")
    parser.add_argument(
        "--limit", type=int, default=20, metavar="N",
        help="differences shown per session (default 20; --json shows all)",
    )  # fmt: skip
    add_json_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        conn = open_store(args.db, readonly=True)
    except StoreError as exc:
        return fail(str(exc))
    try:
        if not has_table(conn, "tool_spans"):
            return fail(f"{args.db} has no tool_spans table yet: run `spanwatch rebuild` first")
        checks = list(check_store(conn, events_shape(conn), args.session))
    except StoreError as exc:
        return fail(str(exc))
    finally:
        conn.close()
    differing = [check for check in checks if check.differences]
    spans = sum(check.spans for check in checks)
    if args.json:
        print_json(
            {
                "sessions": len(checks),
                "spans": spans,
                "sessions_differing": len(differing),
                "sessions_pending": sum(check.pending for check in differing),
                "differences": [_as_json(check) for check in differing],
            }
        )
    else:
        for check in differing:
            _print_check(check, args.limit)
        pending = sum(check.pending for check in differing)
        print(
            f"verified {len(checks)} sessions, {spans} spans: "
            f"{len(differing)} sessions differ"
            + (f" ({pending} pending: not yet rebuilt)" if pending else "")
        )
    return EXIT_PROBLEMS if differing else EXIT_OK


def _print_check(check: SessionCheck, limit: int) -> None:
    state = "pending, not yet rebuilt" if check.pending else "stored spans are wrong"
    print(f"session {check.session_id}: {len(check.differences)} differences ({state})")
    for difference in check.differences[:limit]:
        if difference.problem in ("columns", "paths"):
            changes = ", ".join(
                f"{name}: stored {difference.stored[name]!r}, expected {value!r}"
                for name, value in difference.expected.items()
            )
            print(f"  {difference.span_id}: {changes}")
        else:
            print(f"  {difference.span_id}: {difference.problem}")
    if len(check.differences) > limit:
        print(f"  ... {len(check.differences) - limit} more")


def _as_json(check: SessionCheck) -> dict[str, Any]:
    return {
        "session_id": check.session_id,
        "pending": check.pending,
        "differences": [asdict(d) for d in check.differences],
    }
